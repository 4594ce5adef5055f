"""The budget authority: atomic reserve / commit / release / refund of LLM spend over gRPC.

Grouped by concern, each subpackage below the ones after it (arrows point down only):

    server.py, __main__.py   the one composition root: builds and wires everything
    api/                     the gRPC surface: validate, call the hot path, map the answer
    ops/                     metrics and check-config
    ledger/                  outbox -> PostgreSQL writer, reconciliation, spend reports
    config/                  budgets in PostgreSQL and their copy in Redis
    hotpath/                 the atomic decisions: engine, Lua scripts, Redis, periods, prices
    migrations/              the budget service's numbered SQL files

Below all of them: servicekit (plumbing) and the pricing service's library modules (prices,
costs, names, usage shapes, overrides), never its server or handlers.

May import: servicekit, genproto, pricing_service.prices, pricing_service.cost,
    pricing_service.names, pricing_service.convert, pricing_service.fast_estimate,
    pricing_service.overrides, pricing_service.overrides_repo, pricing_service.usage_shapes
"""
