"""The hot path: every budget decision, made in one atomic Lua script per operation.

Owns: the engine (Reserve, Commit, Release, Refund, Extend, Expire), the scripts and their
loader, the lean Redis wire they run on, the Redis key layout, calendar periods, budget
configuration and matching, the per-org config cache, the sweeper of abandoned holds, and the
in-process price table (WatchPrices copy, org prices, a reservation's price ref).

    engine.py  store.py  scripts/*.lua  redis_wire.py  keys.py
    budgets.py  periods.py  config_cache.py  sweeper.py
    price_table.py  price_refs.py  org_overrides.py

May import: servicekit, genproto, pricing_service.prices, pricing_service.cost,
    pricing_service.names, pricing_service.convert, pricing_service.fast_estimate,
    pricing_service.overrides, pricing_service.overrides_repo
"""
