"""`python -m devstack` (what `make run` runs): Redis, PostgreSQL and the budget service."""

import sys

from devstack.dev import main

sys.exit(main())
