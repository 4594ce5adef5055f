"""The budget authority: atomic reserve / commit / release / refund of LLM spend over gRPC."""
