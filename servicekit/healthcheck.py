"""`python -m servicekit.healthcheck [ADDR] [--service NAME] [--timeout S]`: one health probe.

Asks `grpc.health.v1.Health/Check` at ADDR and answers with its exit code, for Docker's
HEALTHCHECK, compose healthchecks and scripts (Kubernetes uses its native gRPC probe instead):

    0  SERVING
    1  answered, but not serving (NOT_SERVING, unknown service name, no health service)
    2  usage error (bad address, bad option)
    4  unreachable (nothing listening, or no answer within the timeout)

ADDR defaults to this container's own budget service: BUDGET_ADDR's port on the loopback
address (a wildcard host such as 0.0.0.0 is what a server binds, not what a client dials). The
pricing service's container names its address: `python -m servicekit.healthcheck
127.0.0.1:50052`. NAME defaults to "" (the whole server); `budget.v1.BudgetService` or
`pricing.v1.PricingService` ask about one service.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servicekit.settings import Settings

SERVING = 0
NOT_SERVING = 1
USAGE = 2
UNREACHABLE = 4

DEFAULT_ADDR: str = Settings.budget_addr  # BUDGET_ADDR's default, 127.0.0.1:50051
DEFAULT_TIMEOUT = 3.0
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}
# Codes that mean "no answer came back", as opposed to an answer that is not SERVING.
_NO_ANSWER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class UsageError(Exception):
    """The command line is wrong; exit code 2."""


def split_addr(addr: str) -> tuple[str, int]:
    """(host, port) of `host:port` (IPv6 hosts in brackets); UsageError when malformed."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"address {addr!r}: use host:port, e.g. 127.0.0.1:50051")
    return host, int(port_text)


def local_addr(listen_addr: str) -> str:
    """The address a probe in the same container dials to reach a server bound to `listen_addr`."""
    host, port = split_addr(listen_addr)
    return f"{_WILDCARDS.get(host, host)}:{port}"


def default_addr(environ: Mapping[str, str]) -> str:
    """This container's budget service: BUDGET_ADDR (else the pinned default) as dialled locally."""
    return local_addr(environ.get("BUDGET_ADDR") or DEFAULT_ADDR)


def check(addr: str, service: str = "", timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:
    """Ask `addr` once whether `service` is serving: (exit code, one line saying why)."""
    split_addr(addr)
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            details: str = exc.details() or ""
            if code in _NO_ANSWER:
                return UNREACHABLE, f"{addr}: unreachable ({code.name}: {details})"
            if code == grpc.StatusCode.NOT_FOUND:
                return NOT_SERVING, f"{addr}: no service named {service!r}"
            return NOT_SERVING, f"{addr}: health check failed ({code.name}: {details})"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    return SERVING if serving else NOT_SERVING, f"{addr} {service or '(server)'}: {status}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m servicekit.healthcheck",
        description="Ask a gRPC server whether it is serving (grpc.health.v1.Health/Check).",
        epilog="exit codes: 0 serving, 1 not serving, 2 usage error, 4 unreachable",
    )
    parser.add_argument(
        "addr",
        nargs="?",
        metavar="ADDR",
        help="host:port to ask (default: BUDGET_ADDR's port on 127.0.0.1, else 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help='service name to ask about (default "": the whole server)',
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one check; print one line (stdout when serving, stderr otherwise); the exit code."""
    args = _parser().parse_args(argv)
    try:
        if not args.timeout > 0:
            raise UsageError(f"--timeout {args.timeout:g}: give a number of seconds above 0")
        addr = args.addr if args.addr is not None else default_addr(os.environ)
        code, line = check(addr, args.service, args.timeout)
    except UsageError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return USAGE
    print(line, file=sys.stdout if code == SERVING else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
