"""The pricing service: model catalog, exact per-million-token prices, and usage costing.

Its library modules (prices, cost, names, convert, fast_estimate, overrides, overrides_repo,
usage_shapes) are also what the budget service prices tokens with; its server, handlers, feed
and sources are its own.

May import: servicekit, genproto
"""
