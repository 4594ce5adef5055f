"""`python -m budgetctl`: see budgetctl/cli.py."""

from budgetctl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
