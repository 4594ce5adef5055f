"""`python -m devstack` (what `make run` runs): Redis, PostgreSQL and both services."""

import sys

from devstack.dev import main

sys.exit(main())
