"""Budget configuration: PostgreSQL is the source of truth, Redis holds the copy scripts read.

Owns: the budget repository (rows, versions, audit trail) and the sync that pushes one change,
or reconciles a whole org, from PostgreSQL into Redis.

    budget_repo.py  sync.py

May import: servicekit, genproto, budget_service.hotpath
"""
