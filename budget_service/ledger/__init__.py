"""The ledger: money events from the Redis outbox, durable in PostgreSQL, and what is read back.

Owns: the writer that drains every org's outbox stream into the ledger tables, the dead letters
it sets aside instead of stopping, the retention job, reconciliation of Redis counters against
the ledger (and rebuild after data loss, `python -m budget_service.ledger.reconcile`), and spend
reports.

    writer.py  dead_letters.py  retention.py  reconcile.py  reports.py

May import: servicekit, genproto, budget_service.hotpath, budget_service.config
"""
