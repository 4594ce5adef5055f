"""`python -m budget_service.ops.check_config`: every bad value reported, stores reached for real.

Store checks run against the session's Redis (AOF on) and PostgreSQL, and against Redis servers
started here with the settings a deployment must not have (no AOF, appendfsync no, eviction).
The configurations shipped in deploy/ (compose, Kubernetes) must pass it, so they cannot drift
away from the settings.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from budget_service.ops.check_config import Problem, check_environment, check_stores, parse_env_file
from devstack import free_port
from devstack.redis_process import redis_server_binary
from servicekit.settings import Settings
from tests.conftest import Stack

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SETTING_NAMES = {name for name, _, _ in Settings.describe()}
DEPLOYED = {  # a valid configuration as a deployment gives it (stores are filled in per test)
    "BUDGET_ADDR": "0.0.0.0:50051",
    "PRICING_ADDR": "pricing:50052",
    "METRICS_ADDR": "0.0.0.0:9464",
}
OFFLINE = {**DEPLOYED, "REDIS_URL": "redis://r:6379/0", "DATABASE_URL": "postgresql://d/b"}


# -- helpers -----------------------------------------------------------------------------------


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it; only `env` (plus PATH) in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "budget_service.ops.check_config", *args],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_env(path: Path, env: Mapping[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


def run_env_file(
    tmp_path: Path, env: Mapping[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return run_cli("--env-file", str(write_env(tmp_path / "settings.env", env)), *args)


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


def problems_of(env: Mapping[str, str], **kwargs: Any) -> dict[str, list[Problem]]:
    """check_environment's problems by variable."""
    found: dict[str, list[Problem]] = {}
    for problem in check_environment(env, **kwargs):
        found.setdefault(problem.variable, []).append(problem)
    return found


def errors_of(env: Mapping[str, str], **kwargs: Any) -> dict[str, str]:
    return {
        variable: " | ".join(p.message for p in problems if p.level == "error")
        for variable, problems in problems_of(env, **kwargs).items()
        if any(p.level == "error" for p in problems)
    }


def stores(stack: Stack) -> dict[str, str]:
    return {"REDIS_URL": stack.redis.url, "DATABASE_URL": stack.postgres.url}


@contextmanager
def redis_server(tmp_path: Path, *args: str) -> Iterator[str]:
    """A redis-server of our own on a free port with `args` (no AOF unless asked); its URL."""
    port = free_port()
    data = tmp_path / f"redis-{port}"
    data.mkdir()
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--daemonize",
            "no",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "redis-server exited at start"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # up, AOF loaded
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the settings, offline ---------------------------------------------------------------------


def test_valid_configuration_exits_0_and_prints_no_problem(tmp_path: Path, stack: Stack) -> None:
    result = run_env_file(tmp_path, {**DEPLOYED, **stores(stack)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result) == []
    assert "ok: 0 error(s), 0 warning(s)" in result.stderr


def test_every_bad_value_is_reported_not_just_the_first(tmp_path: Path, stack: Stack) -> None:
    bad = {
        "LEDGER_BATCH_SIZE": "1e3",  # Settings cannot parse it
        "PRICING_REFRESH_SECONDS": "soon",
        "LEDGER_WRITER": "ture",  # Settings would read it as false
        "MAX_AMOUNT_NANOS": "0",  # Settings' own checks, one ConfigError at a time
        "SWEEP_INTERVAL_SECONDS": "0",
        "MIN_TTL_SECONDS": "600",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "verbose",
        "TRACING_EXPORTER": "jaeger",
    }
    result = run_env_file(tmp_path, {**DEPLOYED, **stores(stack), **bad})
    assert result.returncode == 2, result.stdout + result.stderr
    reported = {line.split(": ")[1] for line in lines(result) if line.startswith("error: ")}
    for name in bad:
        assert any(name in variable for variable in reported), (name, result.stdout)
    assert len(lines(result)) == len(bad)


def test_each_error_names_the_value_and_the_fix() -> None:
    errors = errors_of(
        {
            **OFFLINE,
            "LEDGER_BATCH_SIZE": "1e3",
            "LEDGER_WRITER": "ture",
            "SWEEP_INTERVAL_SECONDS": "0",
        }
    )
    assert "'1e3'" in errors["LEDGER_BATCH_SIZE"] and "e.g. 1000" in errors["LEDGER_BATCH_SIZE"]
    assert "'ture'" in errors["LEDGER_WRITER"] and "write true or false" in errors["LEDGER_WRITER"]
    assert "greater than 0" in errors["SWEEP_INTERVAL_SECONDS"]
    assert "'0'" in errors["SWEEP_INTERVAL_SECONDS"]


def test_non_finite_durations_are_errors() -> None:
    errors = errors_of({**OFFLINE, "PRICING_REFRESH_SECONDS": "nan", "LEDGER_POLL_SECONDS": "inf"})
    assert set(errors) == {"PRICING_REFRESH_SECONDS", "LEDGER_POLL_SECONDS"}


def test_missing_store_urls_are_errors_for_the_budget_service() -> None:
    errors = errors_of(DEPLOYED)
    assert "not set" in errors["REDIS_URL"] and "not set" in errors["DATABASE_URL"]


def test_pricing_service_needs_no_redis_url() -> None:
    env = {"DATABASE_URL": "postgresql://u:p@pg:5432/db", "PRICING_ADDR": "0.0.0.0:50052"}
    assert problems_of(env, service="pricing") == {}
    assert "REDIS_URL" in errors_of(env, service="budget")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("REDIS_URL", "http://redis:6379/0", "use redis://"),
        ("REDIS_URL", "redis://redis:63x9/0", "port is not a number"),
        ("REDIS_URL", "redis://redis:6379/zero", "not a number"),
        ("REDIS_URL", "redis:///0", "no host"),
        ("DATABASE_URL", "mysql://u:p@db:3306/budget", "use postgresql://"),
        ("DATABASE_URL", "postgresql://u:p@db:port/budget", "port is not a number"),
        ("REDIS_URL", "redis://:CHANGE_ME@redis:6379/0", "placeholder"),
        ("DATABASE_URL", "postgresql://u:CHANGE_ME@db:5432/budget", "placeholder"),
    ],
)
def test_malformed_store_urls_are_errors(variable: str, value: str, says: str) -> None:
    errors = errors_of({**OFFLINE, variable: value})
    assert set(errors) == {variable}
    assert says in errors[variable]


def test_passwords_are_not_printed() -> None:
    errors = errors_of(
        {
            **DEPLOYED,
            "REDIS_URL": "http://:s3cret@redis:6379/0",
            "DATABASE_URL": "mysql://u:s3cret@db/budget",
        }
    )
    assert errors and all("s3cret" not in message for message in errors.values())


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BUDGET_ADDR", "0.0.0.0"), ("PRICING_ADDR", "pricing:port"), ("METRICS_ADDR", ":70000")],
)
def test_addresses_must_be_host_and_port(variable: str, value: str) -> None:
    errors = errors_of({**OFFLINE, variable: value})
    assert set(errors) == {variable}
    assert "host:port" in errors[variable]


def test_metrics_port_must_differ_from_the_grpc_ports() -> None:
    assert "BUDGET_ADDR" in errors_of({**OFFLINE, "METRICS_ADDR": "0.0.0.0:50051"})["METRICS_ADDR"]
    local_pricing = {**OFFLINE, "PRICING_ADDR": "127.0.0.1:50052", "METRICS_ADDR": "0.0.0.0:50052"}
    assert "PRICING_ADDR" in errors_of(local_pricing)["METRICS_ADDR"]
    assert "METRICS_ADDR" not in errors_of({**OFFLINE, "METRICS_ADDR": ""}), (
        "empty turns metrics off"
    )


def test_budget_service_must_not_dial_its_own_port_as_the_pricing_service() -> None:
    assert "PRICING_ADDR" in errors_of({**OFFLINE, "PRICING_ADDR": "127.0.0.1:50051"})


def test_wildcard_pricing_addr_is_a_warning_for_the_budget_service() -> None:
    [problem] = problems_of({**OFFLINE, "PRICING_ADDR": "0.0.0.0:50052"})["PRICING_ADDR"]
    assert problem.level == "warning" and "pricing:50052" in problem.message


def test_loopback_listen_address_is_a_warning() -> None:
    [problem] = problems_of({**OFFLINE, "BUDGET_ADDR": "127.0.0.1:50051"})["BUDGET_ADDR"]
    assert problem.level == "warning" and "0.0.0.0" in problem.message


def test_misspelt_variable_is_a_warning_naming_the_closest_setting(
    tmp_path: Path, stack: Stack
) -> None:
    result = run_env_file(tmp_path, {**DEPLOYED, **stores(stack), "BUDGET_ADRR": "0.0.0.0:1"})
    assert result.returncode == 0, "a warning alone does not fail the check"
    assert lines(result) == [
        "warning: BUDGET_ADRR: not a setting, ignored; did you mean BUDGET_ADDR?"
    ]


def test_lowercase_setting_name_is_a_warning() -> None:
    [problem] = problems_of({**DEPLOYED, "redis_url": "redis://r/0"})["redis_url"]
    assert problem.level == "warning" and "REDIS_URL" in problem.message


def test_from_the_environment_only_look_alikes_of_settings_are_flagged(stack: Stack) -> None:
    env = {
        **DEPLOYED,
        **stores(stack),
        "HOME": "/root",  # not ours
        "BUDGET_SERVICE_PORT_50051_TCP_ADDR": "10.0.0.1",  # Kubernetes service links
        "PRICING_SERVICE_SERVICE_HOST": "10.0.0.2",
        "REDIS_URI": "redis://r/0",  # a typo of REDIS_URL
        "LEDGER_BATCH": "10",  # our prefix, no such setting
    }
    result = run_cli(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    flagged = {line.split(": ")[1] for line in lines(result)}
    assert flagged == {"REDIS_URI", "LEDGER_BATCH"}
    assert "did you mean REDIS_URL?" in result.stdout


def test_from_an_env_file_every_unknown_name_is_flagged() -> None:
    assert problems_of({**DEPLOYED, "HOME": "/root"}, every_name=True)["HOME"][0].level == "warning"


def test_env_file_allows_comments_blank_lines_export_and_quotes() -> None:
    env, problems = parse_env_file(
        "# settings\n\nexport BUDGET_ADDR=0.0.0.0:50051\nLOG_LEVEL = 'debug'\n"
        'DATABASE_URL="postgresql://u:p@db/x#y"\nPRICING_SOURCE_URLS=\n',
        "f.env",
    )
    assert problems == []
    assert env == {
        "BUDGET_ADDR": "0.0.0.0:50051",
        "LOG_LEVEL": "debug",
        "DATABASE_URL": "postgresql://u:p@db/x#y",
        "PRICING_SOURCE_URLS": "",
    }


def test_env_file_junk_lines_are_errors_with_their_line_number(
    tmp_path: Path, stack: Stack
) -> None:
    path = write_env(tmp_path / "s.env", {**DEPLOYED, **stores(stack)})
    path.write_text(path.read_text() + "LOG_LEVEL=info\nthis is not a setting\nLOG_LEVEL=debug\n")
    result = run_cli("--env-file", str(path))
    assert result.returncode == 2
    assert f"error: {path}:7: 'this is not a setting' is not KEY=VALUE" in result.stdout
    assert "warning: LOG_LEVEL: set twice" in result.stdout


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    result = run_cli("--env-file", str(tmp_path / "nowhere.env"))
    assert result.returncode == 2
    assert result.stdout.startswith("error: --env-file: cannot read")


def test_bad_command_line_exits_2() -> None:
    assert run_cli("--connnect").returncode == 2


# -- --connect: the stores, for real -----------------------------------------------------------


def test_connect_passes_against_redis_with_aof_and_postgres(tmp_path: Path, stack: Stack) -> None:
    result = run_env_file(tmp_path, {**DEPLOYED, **stores(stack)}, "--connect")
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result) == []


def test_connect_refuses_redis_without_aof(tmp_path: Path, stack: Stack) -> None:
    with redis_server(tmp_path, "--appendonly", "no") as url:
        result = run_env_file(
            tmp_path, {**DEPLOYED, **stores(stack), "REDIS_URL": url}, "--connect"
        )
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = lines(result)
    assert line.startswith("error: REDIS_URL: ") and "appendonly no" in line
    assert "--appendonly yes" in line


def test_connect_warns_when_redis_never_fsyncs(tmp_path: Path, stack: Stack) -> None:
    with redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "no") as url:
        result = run_env_file(
            tmp_path, {**DEPLOYED, **stores(stack), "REDIS_URL": url}, "--connect"
        )
    assert result.returncode == 0, result.stdout + result.stderr
    [line] = lines(result)
    assert line.startswith("warning: REDIS_URL: ") and "appendfsync no" in line


def test_connect_refuses_redis_that_evicts_keys(tmp_path: Path, stack: Stack) -> None:
    with redis_server(
        tmp_path, "--appendonly", "yes", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"
    ) as url:
        result = run_env_file(
            tmp_path, {**DEPLOYED, **stores(stack), "REDIS_URL": url}, "--connect"
        )
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = lines(result)
    assert "allkeys-lru" in line and "noeviction" in line


def test_connect_exits_4_when_redis_is_unreachable(tmp_path: Path, stack: Stack) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    result = run_env_file(
        tmp_path, {**DEPLOYED, **stores(stack), "REDIS_URL": down}, "--connect", "--timeout", "2"
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert lines(result)[0].startswith("error: REDIS_URL: cannot reach Redis")


def test_connect_exits_4_when_postgres_is_unreachable(tmp_path: Path, stack: Stack) -> None:
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    result = run_env_file(
        tmp_path, {**DEPLOYED, **stores(stack), "DATABASE_URL": down}, "--connect", "--timeout", "2"
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert lines(result)[0].startswith("error: DATABASE_URL: cannot reach PostgreSQL")


def test_connect_unreachable_wins_over_configuration_errors(tmp_path: Path, stack: Stack) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    env = {**DEPLOYED, **stores(stack), "REDIS_URL": down, "LOG_FORMAT": "text"}
    assert run_env_file(tmp_path, env, "--connect", "--timeout", "2").returncode == 4


async def test_connect_reports_a_missing_database_as_a_configuration_error(stack: Stack) -> None:
    url = stack.postgres.url.rsplit("/", 1)[0] + "/no_such_database"
    problems, unreachable = await check_stores({"DATABASE_URL": url}, service="pricing")
    assert not unreachable
    [problem] = problems
    assert problem.level == "error" and "no_such_database" in problem.message


@pytest.mark.parametrize("password", ["wrong-password", ""])
def test_connect_reports_refused_redis_credentials_as_a_configuration_error(
    tmp_path: Path, stack: Stack, password: str
) -> None:
    with redis_server(tmp_path, "--appendonly", "yes", "--requirepass", "right-password") as url:
        url = url.replace("redis://", f"redis://:{password}@" if password else "redis://")
        result = run_env_file(
            tmp_path, {**DEPLOYED, **stores(stack), "REDIS_URL": url}, "--connect"
        )
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = lines(result)
    assert line.startswith("error: REDIS_URL: ") and "credentials" in line
    assert "wrong-password" not in line


# -- the configurations shipped in deploy/ -----------------------------------------------------


def k8s_objects() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None and doc["kind"] != "Kustomization"
    ]


def k8s_deployment_env(name: str) -> dict[str, str]:
    """A Deployment's container environment: its envFrom ConfigMap and Secret, then its env."""
    objects = {(d["kind"], d["metadata"]["name"]): d for d in k8s_objects()}
    deployment = objects[("Deployment", name)]
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in c["envFrom"]:
        if "configMapRef" in source:
            env.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
        if "secretRef" in source:
            env.update(objects[("Secret", source["secretRef"]["name"])]["stringData"])
    env.update({e["name"]: e["value"] for e in c.get("env", [])})
    return env


@pytest.mark.parametrize(
    ("deployment", "service"), [("budget-service", "budget"), ("pricing-service", "pricing")]
)
def test_kubernetes_configuration_passes_check_config_with_real_stores(
    tmp_path: Path, stack: Stack, deployment: str, service: str
) -> None:
    """ConfigMap + Secret (placeholders replaced by the test stores) + env: no problem at all."""
    env = {**k8s_deployment_env(deployment), **stores(stack)}
    result = run_env_file(tmp_path, env, "--service", service, "--connect")
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result) == []


def test_kubernetes_secret_placeholders_are_refused_until_replaced(tmp_path: Path) -> None:
    result = run_env_file(tmp_path, k8s_deployment_env("budget-service"))
    assert result.returncode == 2
    assert {line.split(": ")[1] for line in lines(result)} == {"REDIS_URL", "DATABASE_URL"}
    assert all("CHANGE_ME" in line for line in lines(result))


@pytest.mark.parametrize("service", ["budget", "pricing"])
def test_compose_configuration_passes_check_config(tmp_path: Path, service: str) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    env = {k: str(v) for k, v in compose["services"][service]["environment"].items()}
    result = run_env_file(tmp_path, env, "--service", service)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result) == []


def test_every_variable_set_in_compose_and_kubernetes_is_a_setting() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    used = {
        (f"compose {name}", variable)
        for name in ("budget", "pricing")
        for variable in compose["services"][name]["environment"]
    }
    for doc in k8s_objects():
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "ConfigMap":
            used |= {(f"{kind}/{name}", v) for v in doc["data"]}
        if kind == "Secret":
            used |= {(f"{kind}/{name}", v) for v in doc["stringData"]}
        if kind == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                used |= {(f"{kind}/{name}", e["name"]) for e in c.get("env", [])}
    assert len(used) > 10
    assert {(where, v) for where, v in used if v not in SETTING_NAMES} == set()
