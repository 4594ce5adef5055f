"""The pricing service: model catalog, exact per-million-token prices, and usage costing."""
