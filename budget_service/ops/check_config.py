"""`python -m budget_service.ops.check_config`: check a configuration before it is rolled out.

    python -m budget_service.ops.check_config [--env-file FILE] [--service budget|pricing]
                                          [--connect] [--timeout S]

Reads the settings from the environment, or only from FILE (KEY=VALUE lines; blank lines,
`# comments`, an `export ` prefix and quotes around a value are allowed), and reports every
problem it finds, one line each, `error: VARIABLE: what is wrong and how to fix it` (or
`warning: ...`), on stdout; a summary goes to stderr. It checks what `Settings` checks (every
bad value, not only the first) and what `Settings` leaves to the start of the service: REDIS_URL
and DATABASE_URL set and well formed, addresses in host:port form, the metrics port apart from
the gRPC ports, true/false spelt so, and names that are not settings (a typo such as
BUDGET_ADRR is shown with the setting it resembles).

With --connect it also reaches the stores: Redis answers, runs 6.2 or newer, with `appendonly
yes` (an error otherwise: counters and holds would not survive a Redis restart), an appendfsync
other than `no` (a warning), and no eviction policy; PostgreSQL answers and takes the
credentials.

Exit codes: 0 no errors (warnings allowed), 2 the configuration has errors, 4 --connect could not
reach a store (whatever else was found).

`--service pricing` checks a pricing service's configuration: PRICING_ADDR is then where it
listens, and REDIS_URL and METRICS_ADDR are not used.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib.util
import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import Field, dataclass, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from budget_service.hotpath.redis_wire import Address
from servicekit import tracing
from servicekit.errors import ConfigError
from servicekit.settings import TRUE_WORDS, Settings

OK = 0
CONFIG_ERRORS = 2
UNREACHABLE = 4

Level = Literal["error", "warning"]
Service = Literal["budget", "pricing"]

FIELDS: dict[str, Field[Any]] = {f.metadata["env"]: f for f in fields(Settings)}
PLACEHOLDER = "CHANGE_ME"  # what deploy/k8s's Secret holds until an operator fills it in
FALSE_WORDS = ("0", "false", "no", "off", "")
MIN_REDIS = (6, 2)  # XAUTOCLAIM and XTRIM MINID, used by the ledger writer
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")
# Variables Kubernetes injects for every Service in the namespace (service links), such as
# BUDGET_SERVICE_SERVICE_HOST or PRICING_SERVICE_PORT_50052_TCP_ADDR: not typos of ours.
_SERVICE_LINK = re.compile(
    r"_SERVICE_(HOST|PORT)(_[A-Z0-9_]+)?$|_PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?$"
)
_OUR_PREFIXES = ("BUDGET_", "PRICING_", "LEDGER_")
_ENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong (error) or doubtful (warning) with one variable."""

    level: Level
    variable: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.variable}: {self.message}"


def _error(variable: str, message: str) -> Problem:
    return Problem("error", variable, message)


def _warning(variable: str, message: str) -> Problem:
    return Problem("warning", variable, message)


# -- reading -----------------------------------------------------------------------------------


def parse_env_file(text: str, source: str) -> tuple[dict[str, str], list[Problem]]:
    """The KEY=VALUE pairs of an env file's `text`, and its malformed or repeated lines."""
    env: dict[str, str] = {}
    seen_at: dict[str, int] = {}
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.fullmatch(line)
        if match is None:
            problems.append(
                _error(f"{source}:{number}", f"{line[:40]!r} is not KEY=VALUE; fix or remove it")
            )
            continue
        name, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name in seen_at:
            problems.append(
                _warning(
                    name,
                    f"set twice ({source} lines {seen_at[name]} and {number}); the"
                    " last one counts: remove the other",
                )
            )
        seen_at[name] = number
        env[name] = value
    return env, problems


# -- the settings themselves -------------------------------------------------------------------


def _check_value(name: str, raw: str) -> Problem | None:
    """A value Settings cannot parse, or would parse into something not meant."""
    default: Any = FIELDS[name].default
    kind: type = type(default)
    if kind is bool:
        if raw.lower() not in TRUE_WORDS + FALSE_WORDS:
            return _error(
                name,
                f"{raw!r} is neither true nor false, and the service would read"
                " it as false; write true or false",
            )
    elif kind is int:
        try:
            int(raw)
        except ValueError:
            return _error(name, f"{raw!r} is not a whole number; write digits only, e.g. {default}")
    elif kind is float:
        try:
            number = float(raw)
        except ValueError:
            return _error(name, f"{raw!r} is not a number; e.g. {default:g}")
        if not math.isfinite(number):
            return _error(name, f"{raw!r} is not a finite number; e.g. {default:g}")
    return None


def _build(env: dict[str, str]) -> tuple[Settings, list[Problem]]:
    """Settings from `env` and every ConfigError it raises, not just the first.

    Settings stops at its first complaint; each complaint names the variables it is about, so
    those are set back to their defaults and Settings is built again, until it accepts.
    """
    env = dict(env)
    problems: list[Problem] = []
    for _ in range(len(FIELDS) + 1):
        try:
            return Settings.from_env(env), problems
        except ConfigError as exc:
            named = [n for n in FIELDS if re.search(rf"\b{n}\b", exc.message)]
            values = ", ".join(
                f"{n}={env[n]!r}" for n in named if n in env and repr(env[n]) not in exc.message
            )
            problems.append(
                _error(
                    " / ".join(named) or "settings",
                    exc.message + (f" (given: {values})" if values else ""),
                )
            )
            if not any(n in env for n in named):
                break
            for n in named:
                env.pop(n, None)
    return Settings(), problems


def _unknown_names(env: Mapping[str, str], *, every_name: bool) -> list[Problem]:
    """Names that are not settings: all of them from a file, look-alikes from the environment."""
    problems = []
    for name in env:
        if name in FIELDS:
            continue
        if name.upper() in FIELDS:
            problems.append(
                _warning(name, f"not a setting (names are case-sensitive): write {name.upper()}")
            )
            continue
        close = difflib.get_close_matches(name, FIELDS, n=1, cutoff=0.8)
        if close:
            problems.append(_warning(name, f"not a setting, ignored; did you mean {close[0]}?"))
        elif every_name or (name.startswith(_OUR_PREFIXES) and not _SERVICE_LINK.search(name)):
            problems.append(_warning(name, "not a setting, ignored; remove it or fix its name"))
    return problems


# -- stores and addresses ----------------------------------------------------------------------


def _split_url(name: str, url: str) -> tuple[SplitResult | None, list[Problem]]:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  # parses the port, raising on a bad one
    except ValueError:
        return None, [_error(name, f"{_redact(url)!r}: the port is not a number")]
    problems = []
    if PLACEHOLDER in url:
        problems.append(
            _error(
                name,
                f"still holds the placeholder {PLACEHOLDER}: put the real"
                " host and credentials there",
            )
        )
    return parts, problems


def check_redis_url(url: str) -> list[Problem]:
    """REDIS_URL as the service reads it (redis:// or rediss://, host, port, db number)."""
    if not url:
        return [
            _error(
                "REDIS_URL",
                "not set: the budget service does not start without it; e.g. redis://redis:6379/0",
            )
        ]
    parts, problems = _split_url("REDIS_URL", url)
    if parts is None:
        return problems
    try:
        Address.from_url(url)
    except ConfigError as exc:
        return [*problems, _error("REDIS_URL", exc.message.replace(url, _redact(url)))]
    if not parts.hostname:
        problems.append(_error("REDIS_URL", "no host: write redis://HOST:6379/0"))
    return problems


def check_database_url(url: str) -> list[Problem]:
    """DATABASE_URL as asyncpg reads it: postgresql://user:password@host:port/database."""
    if not url:
        return [
            _error(
                "DATABASE_URL",
                "not set: neither service starts without it; e.g."
                " postgresql://budget:PASSWORD@postgres:5432/budget",
            )
        ]
    parts, problems = _split_url("DATABASE_URL", url)
    if parts is None:
        return problems
    if parts.scheme not in ("postgresql", "postgres"):
        return [
            *problems,
            _error(
                "DATABASE_URL",
                f"{_redact(url)!r}: use postgresql://user:password@host:5432/database",
            ),
        ]
    if not parts.hostname:
        problems.append(
            _warning(
                "DATABASE_URL",
                "no host: asyncpg then uses PGHOST or a local"
                " socket; write postgresql://...@HOST:5432/database",
            )
        )
    if not parts.path.strip("/"):
        problems.append(
            _warning(
                "DATABASE_URL",
                "no database name: PostgreSQL then uses the"
                " user's name; add /DATABASE after the host",
            )
        )
    return problems


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _host_port(name: str, value: str) -> tuple[tuple[str, int] | None, list[Problem]]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        return None, [
            _error(
                name, f"{value!r} is not host:port; e.g. {FIELDS[name].default or '0.0.0.0:9464'}"
            )
        ]
    port = int(port_text)
    if port == 0:
        return (host, port), [
            _warning(
                name,
                f"{value!r}: port 0 takes any free port, which no"
                " client or scraper can know; give a fixed port",
            )
        ]
    return (host, port), []


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _is_local(host: str) -> bool:
    return host in WILDCARD_HOSTS or _is_loopback(host)


def check_addresses(settings: Settings, service: Service) -> list[Problem]:
    """The gRPC and metrics addresses: well formed, reachable from outside, ports apart."""
    problems: list[Problem] = []
    budget, found = _host_port("BUDGET_ADDR", settings.budget_addr)
    problems += found
    pricing, found = _host_port("PRICING_ADDR", settings.pricing_addr)
    problems += found
    metrics = None
    if service == "budget" and settings.metrics_addr:
        metrics, found = _host_port("METRICS_ADDR", settings.metrics_addr)
        problems += found
    listening = [("BUDGET_ADDR", budget), ("METRICS_ADDR", metrics)]
    if service == "pricing":
        listening = [("PRICING_ADDR", pricing)]
    for name, addr in listening:
        if addr is not None and _is_loopback(addr[0]):
            problems.append(
                _warning(
                    name,
                    f"listens on {addr[0]} only: nothing outside this"
                    " machine or container reaches it; use 0.0.0.0:PORT"
                    " in a container",
                )
            )
    if service == "budget" and pricing is not None:
        if pricing[0] in WILDCARD_HOSTS:
            problems.append(
                _warning(
                    "PRICING_ADDR",
                    f"{settings.pricing_addr!r} is where the"
                    " budget service connects, and a wildcard host is a listen"
                    " address: give the pricing service's host, e.g."
                    " pricing:50052",
                )
            )
        if budget is not None and _is_local(pricing[0]) and pricing[1] == budget[1]:
            problems.append(
                _error(
                    "PRICING_ADDR",
                    f"same port as BUDGET_ADDR ({budget[1]}) on"
                    " this machine: the budget service would call itself; the"
                    " pricing service's default is 50052",
                )
            )
    if metrics is not None and metrics[1] != 0:
        if budget is not None and metrics[1] == budget[1]:
            problems.append(
                _error(
                    "METRICS_ADDR",
                    f"same port as BUDGET_ADDR ({budget[1]}):"
                    " the service cannot serve both; the default is 9464",
                )
            )
        if pricing is not None and metrics[1] == pricing[1]:
            problems.append(
                Problem(
                    "error" if _is_local(pricing[0]) else "warning",
                    "METRICS_ADDR",
                    f"same port as PRICING_ADDR ({pricing[1]}):"
                    " they clash where both run on one machine; the default is"
                    " 9464",
                )
            )
    return problems


def check_other(settings: Settings) -> list[Problem]:
    """Values Settings takes as they come and the service would reject or quietly misread."""
    problems = []
    if settings.log_level.upper() not in logging.getLevelNamesMapping():
        problems.append(
            _error(
                "LOG_LEVEL",
                f"{settings.log_level!r} is not a level (the service"
                " would log at info): use debug, info, warning or error",
            )
        )
    exporter = settings.tracing_exporter
    if exporter not in tracing.EXPORTERS:
        problems.append(
            _error("TRACING_EXPORTER", f"{exporter!r}: use otlp, console, global or leave it empty")
        )
    elif exporter:
        module = (
            "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
            if exporter == "otlp"
            else "opentelemetry.sdk.trace"
        )
        if not _importable(module):
            problems.append(
                _warning(
                    "TRACING_EXPORTER",
                    f"{exporter} needs {module}, which this"
                    " installation lacks: pip install"
                    " 'budget-authority[tracing]'",
                )
            )
    return problems


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def check_environment(
    env: Mapping[str, str], *, service: Service = "budget", every_name: bool = False
) -> list[Problem]:
    """Every problem of the configuration `env` (no network); `every_name`: flag any unknown."""
    problems = _unknown_names(env, every_name=every_name)
    parsed: dict[str, str] = {}
    for name in FIELDS:
        raw = env.get(name, "")
        if raw == "":
            continue
        problem = _check_value(name, raw)
        if problem is None:
            parsed[name] = raw
        else:
            problems.append(problem)
    settings, found = _build(parsed)
    problems += found
    if service == "budget" or settings.redis_url:
        problems += check_redis_url(settings.redis_url)
    problems += check_database_url(settings.database_url)
    problems += check_addresses(settings, service)
    problems += check_other(settings)
    return problems


# -- --connect ---------------------------------------------------------------------------------


async def check_redis(url: str, timeout_seconds: float) -> tuple[list[Problem], bool]:
    """Redis at `url`: (problems, unreachable)."""
    import redis.asyncio as aioredis
    from redis import exceptions as rex

    where = _redact(url)
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        decode_responses=True,
    )
    problems: list[Problem] = []
    try:
        server = await client.info("server")
        version = str(server.get("redis_version", "0"))
        if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < MIN_REDIS:
            problems.append(
                _error(
                    "REDIS_URL",
                    f"{where} runs Redis {version}; the ledger"
                    " writer needs 6.2 or newer (XAUTOCLAIM): upgrade it",
                )
            )
        persistence = await client.info("persistence")
        if int(persistence.get("aof_enabled", 0)) != 1:
            problems.append(
                _error(
                    "REDIS_URL",
                    f"{where} runs with appendonly no: counters and"
                    " holds are lost when Redis restarts; run it with"
                    " --appendonly yes --appendfsync everysec",
                )
            )
        problems += await _redis_config(client, where)
    except rex.AuthenticationError as exc:
        problems.append(
            _error(
                "REDIS_URL",
                f"{where} refused the credentials ({exc}): fix the user or password in the URL",
            )
        )
    except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
        problems.append(_error("REDIS_URL", f"cannot reach Redis at {where}: {exc}"))
        return problems, True
    except rex.RedisError as exc:
        problems.append(_error("REDIS_URL", f"Redis at {where} answered with an error: {exc}"))
    finally:
        await client.aclose()
    return problems, False


async def _redis_config(client: Any, where: str) -> list[Problem]:
    """appendfsync and eviction, where CONFIG GET is allowed (managed Redis may refuse it)."""
    from redis import exceptions as rex

    try:
        config = await client.config_get("appendfsync")
        config.update(await client.config_get("maxmemory*"))
    except rex.ResponseError as exc:
        return [
            _warning(
                "REDIS_URL",
                f"{where} refused CONFIG GET ({exc}), so appendfsync and"
                " the eviction policy are unchecked: make sure they are everysec (or"
                " always) and noeviction",
            )
        ]
    problems = []
    if config.get("appendfsync") == "no":
        problems.append(
            _warning(
                "REDIS_URL",
                f"{where} runs with appendfsync no: a crash can"
                " lose many seconds of spend; use everysec (or always)",
            )
        )
    policy = config.get("maxmemory-policy", "noeviction")
    if config.get("maxmemory", "0") != "0" and policy != "noeviction":
        problems.append(
            _error(
                "REDIS_URL",
                f"{where} evicts keys when full"
                f" (maxmemory-policy {policy}): counters, holds and unwritten"
                " ledger events could vanish; set maxmemory-policy noeviction",
            )
        )
    return problems


async def check_postgres(url: str, timeout_seconds: float) -> tuple[list[Problem], bool]:
    """PostgreSQL at `url`: (problems, unreachable)."""
    import asyncpg

    where = _redact(url)
    try:
        conn = await asyncpg.connect(url, timeout=timeout_seconds)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        return [
            _error(
                "DATABASE_URL",
                f"{where} refused the credentials ({exc}): fix the user or password in the URL",
            )
        ], False
    except asyncpg.InvalidCatalogNameError as exc:
        return [
            _error(
                "DATABASE_URL", f"{where}: {exc}; create it (createdb) or fix the name in the URL"
            )
        ], False
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        reason = str(exc) or type(exc).__name__
        return [_error("DATABASE_URL", f"cannot reach PostgreSQL at {where}: {reason}")], True
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        return [_error("DATABASE_URL", f"PostgreSQL at {where}: {exc}")], False
    try:
        row = await conn.fetchrow(
            "SELECT current_user AS who, current_schema() AS schema,"
            " coalesce(has_schema_privilege(current_schema(), 'CREATE'), false) AS can_create"
        )
    finally:
        await conn.close()
    assert row is not None  # a SELECT without FROM returns exactly one row
    if row["can_create"]:
        return [], False
    schema, who = row["schema"], row["who"]
    return [
        _warning(
            "DATABASE_URL",
            f"{who} cannot create tables in schema {schema}: the"
            " migrations applied at start will fail unless they are applied"
            f" already; GRANT CREATE ON SCHEMA {schema or 'public'} TO {who}",
        )
    ], False


async def check_stores(
    env: Mapping[str, str], *, service: Service = "budget", timeout_seconds: float = 5.0
) -> tuple[list[Problem], bool]:
    """Reach the stores `env` names (those whose URL is well formed): (problems, unreachable)."""
    jobs = []
    redis_url = env.get("REDIS_URL", "")
    if service == "budget" and redis_url and not check_redis_url(redis_url):
        jobs.append(check_redis(redis_url, timeout_seconds))
    database_url = env.get("DATABASE_URL", "")
    if database_url and not any(p.level == "error" for p in check_database_url(database_url)):
        jobs.append(check_postgres(database_url, timeout_seconds))
    problems: list[Problem] = []
    unreachable = False
    for found, down in await asyncio.gather(*jobs):
        problems += found
        unreachable = unreachable or down
    return problems, unreachable


# -- command line ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m budget_service.ops.check_config",
        description="Check the budget authority's configuration before a rollout.",
        epilog="exit codes: 0 no errors, 2 configuration errors, 4 a store is unreachable",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="read the settings only from this KEY=VALUE file (default: the environment)",
    )
    parser.add_argument(
        "--service",
        choices=("budget", "pricing"),
        default="budget",
        help="whose configuration this is (default budget)",
    )
    parser.add_argument(
        "--connect", action="store_true", help="also reach Redis and PostgreSQL and check them"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds per store with --connect (default 5)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Check, print one line per problem, and return the exit code."""
    args = _parser().parse_args(argv)
    problems: list[Problem] = []
    if args.env_file is not None:
        try:
            text = args.env_file.read_text()
        except OSError as exc:
            print(f"error: --env-file: cannot read {args.env_file}: {exc.strerror}")
            return CONFIG_ERRORS
        env, problems = parse_env_file(text, str(args.env_file))
    else:
        env = dict(os.environ)
    problems += check_environment(env, service=args.service, every_name=args.env_file is not None)
    unreachable = False
    if args.connect:
        found, unreachable = asyncio.run(
            check_stores(env, service=args.service, timeout_seconds=args.timeout)
        )
        problems += found
    for problem in problems:
        print(problem)
    errors = sum(p.level == "error" for p in problems)
    warnings = len(problems) - errors
    verdict = "unreachable store" if unreachable else "errors" if errors else "ok"
    print(f"check-config: {verdict}: {errors} error(s), {warnings} warning(s)", file=sys.stderr)
    if unreachable:
        return UNREACHABLE
    return CONFIG_ERRORS if errors else OK


if __name__ == "__main__":
    sys.exit(main())
