"""`python -m budget_service`: run the budget service until SIGINT or SIGTERM."""

from __future__ import annotations

import sys

from budget_service import server
from servicekit import process
from servicekit.settings import Settings

USAGE = """usage: python -m budget_service

Runs the budget service. Configured by environment variables:
"""


def main() -> None:
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(USAGE + "\n".join(f"  {n:32} {d!r:24} {h}" for n, d, h in Settings.describe()))
        return
    process.run("budget_service", server.start)


if __name__ == "__main__":
    main()
