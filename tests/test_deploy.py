"""deploy/: the image, compose file, Kubernetes manifests and dashboard, checked offline.

The Docker daemon cannot pull base images here, so the image itself is not built: the
Dockerfile's structure is checked, and its HEALTHCHECK command (servicekit.healthcheck) is
run against the real services the session fixtures start.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import json
import os
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2

from budget_service import server
from devstack import free_port
from pricing_service import server as pricing_server
from tests.conftest import Stack, service_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD = DEPLOY / "grafana" / "budget-authority.json"
K8S_VERSION = "1.30"
NAMESPACE = "budget-authority"
BUDGET_PORT, PRICING_PORT, METRICS_PORT = 50051, 50052, 9464
HEALTHCHECK = ("python", "-m", "servicekit.healthcheck")

Doc = dict[str, Any]


# -- helpers -----------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def k8s_docs() -> list[tuple[Path, Doc]]:
    """Every Kubernetes object under deploy/k8s (the kustomization is kustomize's, not an API)."""
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None and doc["kind"] != "Kustomization"
    ]


def k8s_object(kind: str, name: str) -> Doc:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Doc = containers[0]
    return result


def k8s_env(deployment_name: str) -> dict[str, str]:
    """The environment a Deployment's container gets: envFrom sources, then env (which wins)."""
    c = container(k8s_object("Deployment", deployment_name))
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(k8s_object("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(k8s_object("Secret", source["secretRef"]["name"])["stringData"])
    env.update({e["name"]: e["value"] for e in c.get("env", [])})
    return env


def port_of(addr: str) -> int:
    return int(addr.rpartition(":")[2])


def host_of(addr: str) -> str:
    return addr.rpartition(":")[0]


def compose() -> Doc:
    doc: Doc = yaml.safe_load(COMPOSE.read_text())
    return doc


def compose_env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose()["services"][service]["environment"].items()}


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        word, _, rest = line.partition(" ")
        instruction = (word.upper(), rest.strip())
        if instruction[0] == "FROM":
            stages.append([instruction])
        elif stages:
            stages[-1].append(instruction)
    return stages


def exec_form(arguments: str) -> list[str]:
    """A JSON exec-form argument list (CMD ["python", ...]); fails on the shell form."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), arguments
    return parsed


# -- YAML --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_under_deploy_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no document"
    assert all(isinstance(d, dict) for d in docs)


def test_deploy_has_compose_k8s_and_dashboard() -> None:
    assert COMPOSE in yaml_files()
    assert {p.name for p in K8S.glob("*.yaml")} >= {
        "namespace.yaml",
        "config.yaml",
        "budget-service.yaml",
        "pricing-service.yaml",
        "kustomization.yaml",
    }


# -- Kubernetes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [d for _, d in k8s_docs()],
    ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in k8s_docs()],
)
def test_kubernetes_manifest_matches_the_strict_schema(doc: Doc) -> None:
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION


def test_strict_schema_check_rejects_a_misspelt_field() -> None:
    """The schema check above can fail: a typo in a probe's name is caught."""
    broken = copy.deepcopy(k8s_object("Deployment", "budget-service"))
    c = broken["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_every_namespaced_object_lives_in_the_budget_authority_namespace() -> None:
    for _, doc in k8s_docs():
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]


def test_budget_service_runs_3_replicas_and_pricing_service_2() -> None:
    assert k8s_object("Deployment", "budget-service")["spec"]["replicas"] == 3
    assert k8s_object("Deployment", "pricing-service")["spec"]["replicas"] == 2


@pytest.mark.parametrize("name", ["budget-service", "pricing-service"])
def test_pods_run_as_non_root_without_privileges(name: str) -> None:
    deployment = k8s_object("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = container(deployment)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize(
    ("name", "port"), [("budget-service", BUDGET_PORT), ("pricing-service", PRICING_PORT)]
)
def test_probes_are_native_grpc_health_checks_on_the_pinned_port(name: str, port: int) -> None:
    c = container(k8s_object("Deployment", name))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == port, probe
    assert port in [p["containerPort"] for p in c["ports"]]


def test_budget_readiness_asks_the_whole_server_and_liveness_only_that_it_answers() -> None:
    """Readiness waits for the prices; startup and liveness must not restart a pod that waits."""
    c = container(k8s_object("Deployment", "budget-service"))
    assert c["readinessProbe"]["grpc"] == {"port": BUDGET_PORT}
    for probe in ("startupProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": BUDGET_PORT, "service": "liveness"}, probe
    pricing = container(k8s_object("Deployment", "pricing-service"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert pricing[probe]["grpc"] == {"port": PRICING_PORT}, probe


@pytest.mark.parametrize(
    ("name", "listen_var", "port"),
    [
        ("budget-service", "BUDGET_ADDR", BUDGET_PORT),
        ("pricing-service", "PRICING_ADDR", PRICING_PORT),
    ],
)
def test_each_service_listens_on_every_interface_at_its_pinned_port(
    name: str, listen_var: str, port: int
) -> None:
    addr = k8s_env(name)[listen_var]
    assert host_of(addr) == "0.0.0.0" and port_of(addr) == port


def test_budget_service_reaches_pricing_through_the_pricing_service() -> None:
    target = k8s_env("budget-service")["PRICING_ADDR"]
    service = k8s_object("Service", host_of(target).split(".")[0])
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "pricing-service"}
    assert port_of(target) in [p["port"] for p in service["spec"]["ports"]]


def test_budget_pods_expose_metrics_and_ask_to_be_scraped() -> None:
    deployment = k8s_object("Deployment", "budget-service")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert ports["metrics"] == METRICS_PORT == port_of(k8s_env("budget-service")["METRICS_ADDR"])


@pytest.mark.parametrize("name", ["budget-service", "pricing-service"])
def test_resources_are_requested_and_memory_is_limited(name: str) -> None:
    resources = container(k8s_object("Deployment", name))["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_services_select_deployment_pods_and_target_named_ports() -> None:
    deployments = {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == "Deployment"}
    services = [d for _, d in k8s_docs() if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} >= {"budget-service", "pricing-service"}
    for service in services:
        selected = [
            d
            for d in deployments.values()
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        names = {p["name"] for p in container(selected[0])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, (service["metadata"]["name"], port)


@pytest.mark.parametrize("name", ["budget-service", "pricing-service"])
def test_disruption_budget_and_autoscaler_cover_the_deployment(name: str) -> None:
    deployment = k8s_object("Deployment", name)
    replicas = deployment["spec"]["replicas"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = k8s_object("PodDisruptionBudget", name)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["spec"]["minAvailable"] < replicas  # a node can still be drained
    hpa = k8s_object("HorizontalPodAutoscaler", name)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    assert hpa["spec"]["minReplicas"] == replicas < hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


@pytest.mark.parametrize("name", ["budget-service", "pricing-service"])
def test_grace_period_outlasts_the_prestop_pause_and_the_drain(name: str) -> None:
    deployment = k8s_object("Deployment", name)
    pause = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    drain = float(k8s_env(name).get("SHUTDOWN_GRACE_SECONDS", "10"))
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(pause[1]) + drain


def test_secret_holds_only_placeholder_credentials() -> None:
    secret = k8s_object("Secret", "budget-authority-secrets")
    assert set(secret["stringData"]) == {"REDIS_URL", "DATABASE_URL"}
    assert all("CHANGE_ME" in v for v in secret["stringData"].values())
    config = k8s_object("ConfigMap", "budget-authority-config")["data"]
    assert not {"REDIS_URL", "DATABASE_URL"} & config.keys(), "credentials belong in the Secret"


# -- compose -----------------------------------------------------------------------------------

# Keys of a compose service (compose specification); a misspelt one is silently ignored.
COMPOSE_SERVICE_KEYS = {
    "build", "command", "container_name", "depends_on", "entrypoint", "env_file",
    "environment", "expose", "healthcheck", "image", "labels", "networks", "ports",
    "profiles", "read_only", "restart", "security_opt", "stop_grace_period", "stop_signal",
    "tmpfs", "user", "volumes", "working_dir", "logging", "deploy", "ulimits", "init",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval"}


def test_compose_defines_the_four_services_with_known_keys() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "postgres", "pricing", "budget"}
    for name, service in services.items():
        assert set(service) <= COMPOSE_SERVICE_KEYS, (name, set(service) - COMPOSE_SERVICE_KEYS)
        assert set(service["healthcheck"]) <= HEALTHCHECK_KEYS, name


def test_compose_runs_redis_with_aof_everysec_on_a_volume() -> None:
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose()["volumes"]


def test_compose_keeps_postgres_data_on_a_volume() -> None:
    volume = compose()["services"]["postgres"]["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data" and volume[0] in compose()["volumes"]


def test_compose_healthchecks_ask_each_server_itself() -> None:
    services = compose()["services"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    for name, port in (("budget", BUDGET_PORT), ("pricing", PRICING_PORT)):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and tuple(test[1:4]) == HEALTHCHECK, name
        assert test[4] == f"127.0.0.1:{port}", name


def test_compose_starts_each_service_after_its_dependencies_are_healthy() -> None:
    services = compose()["services"]
    assert set(services["pricing"]["depends_on"]) == {"postgres"}
    assert set(services["budget"]["depends_on"]) == {"redis", "postgres", "pricing"}
    for name in ("pricing", "budget"):
        for dependency in services[name]["depends_on"].values():
            assert dependency == {"condition": "service_healthy"}, name


def test_compose_builds_both_services_from_the_deploy_dockerfile() -> None:
    services = compose()["services"]
    for name, module in (("budget", "budget_service"), ("pricing", "pricing_service")):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert services[name]["command"] == ["python", "-m", module]
    assert services["budget"]["image"] == services["pricing"]["image"]


def test_compose_budget_reaches_the_pricing_container_by_name() -> None:
    pricing_listen = compose_env("pricing")["PRICING_ADDR"]
    target = compose_env("budget")["PRICING_ADDR"]
    assert host_of(pricing_listen) == "0.0.0.0"
    assert target == f"pricing:{port_of(pricing_listen)}"
    budget = compose_env("budget")
    assert host_of(budget["BUDGET_ADDR"]) == host_of(budget["METRICS_ADDR"]) == "0.0.0.0"


def test_compose_publishes_the_pinned_ports_on_loopback_only() -> None:
    services = compose()["services"]
    assert services["budget"]["ports"] == [
        f"127.0.0.1:{BUDGET_PORT}:{BUDGET_PORT}",
        f"127.0.0.1:{METRICS_PORT}:{METRICS_PORT}",
    ]
    assert services["pricing"]["ports"] == [f"127.0.0.1:{PRICING_PORT}:{PRICING_PORT}"]
    assert "ports" not in services["redis"] and "ports" not in services["postgres"]


def test_compose_database_url_matches_the_postgres_container() -> None:
    postgres = compose()["services"]["postgres"]["environment"]
    expected = (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    assert compose_env("budget")["DATABASE_URL"] == expected
    assert compose_env("pricing")["DATABASE_URL"] == expected
    assert compose_env("budget")["REDIS_URL"] == "redis://redis:6379/0"


def test_compose_stop_grace_outlasts_the_service_drain() -> None:
    drain = float(compose_env("budget").get("SHUTDOWN_GRACE_SECONDS", "10"))
    for name in ("budget", "pricing"):
        assert float(compose()["services"][name]["stop_grace_period"].rstrip("s")) > drain


# -- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_builds_in_a_builder_stage_and_copies_its_venv() -> None:
    builder, final = dockerfile_stages()
    assert builder[0][1].endswith(" AS builder")
    runs = " ".join(args for instruction, args in builder if instruction == "RUN")
    assert re.search(r"python -m venv (\S+)", runs)
    assert re.search(r"pip install \"?\.(\[[a-z,]+\])?\"?", runs)
    copies = [args for instruction, args in final if instruction == "COPY"]
    assert any(c.startswith("--from=builder /opt/venv") for c in copies)
    assert not any(args.startswith(". ") for instruction, args in final if instruction == "COPY")


def test_dockerfile_both_stages_use_python_3_11_slim() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert [stage[0][1].split()[0] for stage in dockerfile_stages()] == ["${PYTHON_IMAGE}"] * 2


def test_dockerfile_final_stage_runs_as_a_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    users = [args for instruction, args in final if instruction == "USER"]
    assert users, "no USER in the final stage: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric uid lets Kubernetes verify runAsNonRoot"
    pod_user = k8s_object("Deployment", "budget-service")["spec"]["template"]["spec"]
    assert pod_user["securityContext"]["runAsUser"] == int(user)


def test_dockerfile_healthcheck_runs_the_healthcheck_module() -> None:
    final = dockerfile_stages()[-1]
    [healthcheck] = [args for instruction, args in final if instruction == "HEALTHCHECK"]
    options, _, command = healthcheck.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    assert tuple(exec_form(command)[:3]) == HEALTHCHECK


def test_dockerfile_exposes_the_pinned_ports_and_runs_the_budget_service() -> None:
    final = dockerfile_stages()[-1]
    exposed = {int(p) for i, a in final if i == "EXPOSE" for p in a.split()}
    assert exposed == {BUDGET_PORT, PRICING_PORT, METRICS_PORT}
    [cmd] = [args for instruction, args in final if instruction == "CMD"]
    assert exec_form(cmd) == ["python", "-m", "budget_service"]
    env = " ".join(args for instruction, args in final if instruction == "ENV")
    assert f"BUDGET_ADDR=0.0.0.0:{BUDGET_PORT}" in env
    assert f"METRICS_ADDR=0.0.0.0:{METRICS_PORT}" in env


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether `path` (relative to the root) is left out of the build context (last match wins)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(
            fnmatch.fnmatch(prefix, bare) or fnmatch.fnmatch(prefix, bare.removeprefix("**/"))
            for prefix in prefixes
        ) or (bare.startswith("**/") and any(fnmatch.fnmatch(p, bare[3:]) for p in parts))
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_pip_install_needs_and_drops_the_rest() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    needed = ["pyproject.toml", pyproject["project"]["readme"], *packages]
    needed += [
        f"{package}/{f.name}"
        for package in packages
        if (ROOT / package).is_dir()
        for f in (ROOT / package).iterdir()
        if f.name != "__pycache__"
    ]
    assert [p for p in needed if dockerignored(p, patterns)] == []
    for junk in (".git", ".venv", ".data", "tests", "clients/node/node_modules", "x/__pycache__"):
        assert dockerignored(junk, patterns), junk


# -- Grafana -----------------------------------------------------------------------------------

SERVICE_METRICS = [
    "budget_rpc_calls_total",
    "budget_rpc_latency_seconds",
    "budget_reservations_total",
    "budget_utilization_ratio",
    "budget_price_catalog_version",
    "budget_price_catalog_age_seconds",
    "budget_ledger_backlog_events",
    "budget_ledger_oldest_event_age_seconds",
    "budget_ledger_events_written_total",
    "budget_ledger_write_failures_total",
    "budget_ledger_reconcile_differences",
    "budget_ledger_dead_letters",
    "budget_ledger_failing_orgs",
]
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def dashboard() -> Doc:
    doc: Doc = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: Doc) -> Iterator[Doc]:
    for panel in doc["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_expressions(doc: Doc) -> list[str]:
    return [t["expr"] for p in panels(doc) for t in p.get("targets", [])]


def metrics_in(expr: str) -> set[str]:
    """The budget_* series an expression reads (a histogram's series as the histogram's name)."""
    found = set()
    for name in re.findall(r"\bbudget_[a-z_]+\b", expr):
        for suffix in HISTOGRAM_SERIES:
            if name.endswith(suffix) and name.removesuffix(suffix) in SERVICE_METRICS:
                name = name.removesuffix(suffix)
        found.add(name)
    return found


def test_dashboard_selects_a_prometheus_datasource_through_a_variable() -> None:
    doc = dashboard()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(doc):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("metric", SERVICE_METRICS)
def test_dashboard_charts_every_service_metric(metric: str) -> None:
    assert any(metric in metrics_in(expr) for expr in panel_expressions(dashboard()))


def test_dashboard_reads_no_metric_the_service_does_not_export() -> None:
    read = set().union(*(metrics_in(e) for e in panel_expressions(dashboard())))
    assert read <= set(SERVICE_METRICS), read - set(SERVICE_METRICS)


def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    doc = dashboard()
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids))
    for panel in panels(doc):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
    assert doc["uid"] and doc["title"]


def test_dashboard_histogram_quantiles_aggregate_by_le() -> None:
    quantiles = [e for e in panel_expressions(dashboard()) if "histogram_quantile" in e]
    assert quantiles
    assert all("budget_rpc_latency_seconds_bucket" in e and "le" in e for e in quantiles)


# -- the healthcheck, against the real services ------------------------------------------------


async def healthcheck(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `python -m servicekit.healthcheck ARGS`: (exit code, stdout + stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "servicekit.healthcheck",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_healthcheck_exits_0_when_the_budget_service_is_serving(app: server.App) -> None:
    code, out = await healthcheck(f"127.0.0.1:{app.port}")
    assert code == 0, out
    assert "SERVING" in out


async def test_healthcheck_exits_0_for_a_named_service_of_each_server(
    app: server.App, pricing_app: pricing_server.PricingApp
) -> None:
    code, out = await healthcheck(f"127.0.0.1:{app.port}", "--service", "budget.v1.BudgetService")
    assert code == 0, out
    code, out = await healthcheck(
        f"127.0.0.1:{pricing_app.port}", "--service", "pricing.v1.PricingService"
    )
    assert code == 0, out


async def test_healthcheck_default_address_follows_budget_addr(app: server.App) -> None:
    """The image's HEALTHCHECK passes no address: BUDGET_ADDR's wildcard host is dialled locally."""
    code, out = await healthcheck(env={"BUDGET_ADDR": f"0.0.0.0:{app.port}"})
    assert code == 0, out


async def test_healthcheck_exits_1_for_a_service_the_server_does_not_have(
    app: server.App,
) -> None:
    code, out = await healthcheck(f"127.0.0.1:{app.port}", "--service", "no.such.Service")
    assert code == 1, out
    assert "no.such.Service" in out


async def test_healthcheck_exits_1_when_not_serving_and_4_once_stopped(
    stack: Stack, pricing_app: pricing_server.PricingApp
) -> None:
    own = await server.start(service_settings(stack, pricing_addr=f"127.0.0.1:{pricing_app.port}"))
    addr = f"127.0.0.1:{own.port}"
    try:
        assert await own.wait_ready(30)
        assert (await healthcheck(addr))[0] == 0
        await own.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        code, out = await healthcheck(addr)
        assert code == 1, out
        assert "NOT_SERVING" in out
    finally:
        await own.stop()
    code, out = await healthcheck(addr, "--timeout", "2")
    assert code == 4, out


async def test_healthcheck_exits_4_when_nothing_listens() -> None:
    code, out = await healthcheck(f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 4, out
    assert "unreachable" in out


@pytest.mark.parametrize(
    "args",
    [["no-port-here"], ["127.0.0.1:99999"], ["--timeout", "0"], ["--timeout", "soon"], ["--x"]],
)
async def test_healthcheck_exits_2_on_a_usage_error(args: list[str]) -> None:
    code, out = await healthcheck(*args)
    assert code == 2, out
