"""`python -m pricing_service`: run the pricing service until SIGINT or SIGTERM."""

from __future__ import annotations

from pricing_service import server
from servicekit import process


def main() -> None:
    process.run("pricing_service", server.start)


if __name__ == "__main__":
    main()
