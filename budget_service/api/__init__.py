"""The gRPC surface: thin handlers that validate a request, make one call, map the answer.

Owns: BudgetService (the gateway's Reserve / Commit / Release / Refund / Extend) and
BudgetAdminService (budget configuration, status, reservations, spend reports).

    gateway.py  admin.py

May import: servicekit, genproto, budget_service.hotpath, budget_service.config,
    budget_service.ledger, budget_service.ops, pricing_service.prices, pricing_service.cost,
    pricing_service.convert, pricing_service.overrides, pricing_service.usage_shapes
"""
