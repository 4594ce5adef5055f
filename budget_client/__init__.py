"""Python client of the budget authority: reserve before an LLM call, commit or release after.

    from budget_client import BudgetClient, Subject, Usage

    async with BudgetClient("127.0.0.1:50051") as client:
        async with client.reserve(Subject(org="acme", team="search", model="gpt-4o"),
                                  usage=Usage(input_tokens=1200, output_tokens=800)) as hold:
            response = await openai.chat.completions.create(...)
            hold.commit_response(response)

Money is int nano-USD everywhere (`usd_to_nanos("0.04") == 40_000_000`; floats are refused).
`BudgetClientSync` is the same client for synchronous code.

May import: genproto (a client never depends on the server's code)
"""

from budget_client.client import (
    DEFAULT_ADDR,
    BudgetClient,
    Hold,
    Outcome,
    ReserveCall,
    UnsettledHoldWarning,
)
from budget_client.errors import (
    BudgetClientError,
    BudgetExceeded,
    IdempotencyConflict,
    InvalidRequest,
    InvalidState,
    NotFound,
    Refusal,
    Unavailable,
)
from budget_client.models import (
    BudgetBalance,
    BudgetStatus,
    CommitResult,
    Priority,
    RefundResult,
    Reservation,
    Subject,
    Usage,
)
from budget_client.money import NANOS_PER_USD, Nanos, nanos_to_usd, usd_to_nanos
from budget_client.providers import StreamUsage, provider_usage, provider_usage_json
from budget_client.sync import BudgetClientSync, SyncHold

__all__ = [
    "DEFAULT_ADDR",
    "NANOS_PER_USD",
    "BudgetBalance",
    "BudgetClient",
    "BudgetClientError",
    "BudgetClientSync",
    "BudgetExceeded",
    "BudgetStatus",
    "CommitResult",
    "Hold",
    "IdempotencyConflict",
    "InvalidRequest",
    "InvalidState",
    "Nanos",
    "NotFound",
    "Outcome",
    "Priority",
    "RefundResult",
    "Refusal",
    "Reservation",
    "ReserveCall",
    "StreamUsage",
    "Subject",
    "SyncHold",
    "Unavailable",
    "UnsettledHoldWarning",
    "Usage",
    "nanos_to_usd",
    "provider_usage",
    "provider_usage_json",
    "usd_to_nanos",
]
