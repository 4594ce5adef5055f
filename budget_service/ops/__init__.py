"""Operations: what an operator watches and checks.

Owns: Prometheus metrics (RPC counts and latencies, admissions, utilization, ledger backlog)
and `python -m budget_service.ops.check_config` (a configuration checked before a rollout).

    metrics.py  check_config.py

May import: servicekit, genproto, budget_service.hotpath, budget_service.config,
    budget_service.ledger
"""
