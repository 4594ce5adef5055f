"""servicekit: the plumbing both services stand on, and nothing of either service.

Owns: the RPC wrapper (one log line, metrics and a span per call, errors mapped to gRPC
status), the gRPC server's construction (limits, undecodable requests), the error tree and its
status mapping, request-field validation, the one settings object, the PostgreSQL pool and
migrations runner, the process runner, periodic jobs, logging, the clock, tracing, and the
health-check command (`python -m servicekit.healthcheck`).

    rpc.py          the wrapper every RPC method goes through
    serving.py      the gRPC server: limits from the settings, undecodable requests answered
    errors.py       every error a service answers with, drawn as a tree; -> gRPC status
    validation.py   checks of request fields (ids, values, amounts, enums)
    settings.py     every setting, with its environment variable and default
    db.py           asyncpg pool, numbered SQL migrations, the connection guard
    process.py      `python -m <service>`: settings, logs, uvloop, graceful stop
    periodic.py     background jobs on an interval
    logs.py         structlog, configured once
    clock.py        the one clock (milliseconds), and a test clock that can be moved
    tracing.py      optional OpenTelemetry spans per RPC
    healthcheck.py  `python -m servicekit.healthcheck`: a gRPC health probe for containers

May import: nothing first-party (third-party packages only).
"""
