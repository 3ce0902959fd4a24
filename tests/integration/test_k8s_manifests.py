"""The Kubernetes manifests in deploy/k8s, rendered and checked without a cluster or a network.

Rendering: deploy/local/k8s-tools.sh (`kubectl kustomize` when kubectl embeds Kustomize v5,
else a kustomize built once with Go from deploy/local/tools). Validation: every object against
the Kubernetes OpenAPI schemas bundled in the `kubernetes-validate` package (strict: unknown
fields fail), for the oldest and newest Kubernetes versions we support, then the rules this
project holds its deployments to.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S_TOOLS = ROOT / "deploy" / "local" / "k8s-tools.sh"
TARGETS = {
    "base": ROOT / "deploy" / "k8s" / "base",
    "dev": ROOT / "deploy" / "k8s" / "overlays" / "dev",
}
# Oldest and newest Kubernetes versions the manifests must be valid for.
K8S_VERSIONS = ("1.30.0", "1.37.0")

UID = 10001
SECRET_NAME = "qbo-sync-secrets"
# Settings that are secrets: they may only come from a Secret, never from a literal or ConfigMap.
SECRET_SETTINGS = {
    "QBO_CLIENT_ID",
    "QBO_CLIENT_SECRET",
    "QBO_WEBHOOK_VERIFIER_TOKEN",
    "TOKEN_ENCRYPTION_KEYS",
    "TOKEN_ENCRYPTION_PRIMARY_KEY_ID",
    "OAUTH_STATE_SECRET",
    "API_TOKENS",
    "SYNC_API_TOKENS",
    "CONNECT_LINK_SECRET",
    "MONGODB_URI",
}
# Least privilege: the api never sees QBO credentials or tokens (docs/design.md), sync never needs
# the api's bearer tokens. Both sign or check connect links.
API_SECRETS = {"MONGODB_URI", "API_TOKENS", "CONNECT_LINK_SECRET"}
SYNC_SECRETS = SECRET_SETTINGS - {"API_TOKENS"}
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
INGRESS_NS_LABEL = "kubernetes.io/metadata.name"
SYNC_POD = {"app.kubernetes.io/name": "qbo-sync", "app.kubernetes.io/component": "sync"}
EMULATOR_POD = {"app.kubernetes.io/name": "qbo-sync", "app.kubernetes.io/component": "emulator"}
PRODUCTION_QBO = {
    "QBO_API_BASE_URL": "https://quickbooks.api.intuit.com",
    "QBO_OAUTH_AUTHORIZE_URL": "https://appcenter.intuit.com/connect/oauth2",
    "QBO_OAUTH_TOKEN_URL": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
    "QBO_OAUTH_REVOKE_URL": "https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
}

Obj = dict[str, Any]


def _render(target: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(  # noqa: S603 - fixed arguments
        [str(K8S_TOOLS), "build", str(target)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
    )
    assert result.returncode == 0, f"rendering {target} failed:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for name, target in TARGETS.items():
        docs = [d for d in yaml.safe_load_all(_render(target)) if d]
        assert docs, f"{name} rendered nothing"
        out[name] = docs
    return out


def _of(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def _one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in _of(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _prefix(target: str) -> str:
    return "dev-" if target == "dev" else ""


def _containers(workload: Obj) -> Iterator[Obj]:
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _quantity(value: str | int) -> float:
    """CPU or memory quantity as a number (enough of the Kubernetes grammar for our manifests)."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _config(objs: list[Obj]) -> dict[str, str]:
    (cm,) = _of(objs, "ConfigMap")
    data: dict[str, str] = cm["data"]
    return data


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_object_matches_the_kubernetes_schema(
    rendered: dict[str, list[Obj]], target: str, version: str
) -> None:
    errors = []
    for obj in rendered[target]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except jsonschema.ValidationError as exc:
            where = f"{obj['kind']}/{obj['metadata']['name']}: {'/'.join(map(str, exc.path))}"
            errors.append(f"{where}: {exc.message}")
    assert not errors, f"{target} is not valid for Kubernetes {version}:\n" + "\n".join(errors)


def test_base_has_every_piece(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["base"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for expected in [
        ("Deployment", "qbo-sync"),
        ("Deployment", "qbo-api"),
        ("Service", "qbo-sync"),
        ("Service", "qbo-api"),
        ("HorizontalPodAutoscaler", "qbo-api"),
        ("PodDisruptionBudget", "qbo-sync"),
        ("PodDisruptionBudget", "qbo-api"),
        ("NetworkPolicy", "default-deny-ingress"),
        ("NetworkPolicy", "qbo-sync"),
        ("NetworkPolicy", "qbo-api"),
        ("ServiceAccount", "qbo-sync"),
        ("ServiceAccount", "qbo-api"),
    ]:
        assert expected in kinds, f"base lacks {expected}"
    assert len(_of(objs, "ConfigMap")) == 1


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_no_secret_values_are_committed(rendered: dict[str, list[Obj]], target: str) -> None:
    objs = rendered[target]
    assert not _of(objs, "Secret"), "Secrets are created out of band, never rendered from git"
    config = _config(objs)
    leaked = (set(config) & SECRET_SETTINGS) - ({"MONGODB_URI"} if target == "dev" else set())
    assert not leaked, f"secret settings in the ConfigMap: {leaked}"
    for key, value in config.items():
        assert not urlsplit(value).password, f"{key} carries credentials"
    for workload in _of(objs, "Deployment"):
        for container in _containers(workload):
            for env in container.get("env", []):
                if env["name"] in SECRET_SETTINGS:
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    assert ref and "value" not in env, f"{env['name']} must come from a Secret"
                    assert ref["name"] == SECRET_NAME
                    assert ref["key"] == env["name"]
                    assert not ref.get("optional"), "a missing secret must stop the pod"


def test_base_takes_every_secret_from_the_secret_and_api_only_its_own(
    rendered: dict[str, list[Obj]],
) -> None:
    objs = rendered["base"]

    def secret_env(name: str) -> set[str]:
        (container,) = _one(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        return {
            e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
        }

    assert secret_env("qbo-sync") == SYNC_SECRETS
    assert secret_env("qbo-api") == API_SECRETS
    assert secret_env("qbo-sync") | secret_env("qbo-api") == SECRET_SETTINGS


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_setting_is_a_settings_field_and_parses(
    rendered: dict[str, list[Obj]], target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(rendered[target])
    unknown = set(config) - SETTINGS_ENV
    assert not unknown, f"ConfigMap keys that Settings does not read: {unknown}"
    for workload in _of(rendered[target], "Deployment"):
        for container in _containers(workload):
            if container["name"] == "emulator":  # configured by QBO_EMULATOR_*, not Settings
                continue
            names = {e["name"] for e in container.get("env", [])}
            assert names <= SETTINGS_ENV, (
                f"unknown env in {container['name']}: {names - SETTINGS_ENV}"
            )
    # What a container sees: the ConfigMap as its environment, read by the real Settings class.
    for key in SETTINGS_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.commands_partitions >= 1


def test_base_is_configured_for_production(rendered: dict[str, list[Obj]]) -> None:
    config = _config(rendered["base"])
    assert config["ENVIRONMENT"] == "production"
    assert config["LOG_JSON"] == "true"
    for key, url in PRODUCTION_QBO.items():
        assert config[key] == url
    assert config["QBO_REDIRECT_URI"].startswith("https://")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_container_is_hardened(rendered: dict[str, list[Obj]], target: str) -> None:
    for workload in _of(rendered[target], "Deployment"):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        pod_sc = pod["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in _containers(workload):
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc.get("runAsNonRoot", pod_sc["runAsNonRoot"]) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser")) == UID, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            seccomp = sc.get("seccompProfile", pod_sc["seccompProfile"])
            assert seccomp["type"] == "RuntimeDefault", where
            mounts = container.get("volumeMounts", [])
            tmp = [m for m in mounts if m["mountPath"] == "/tmp"]  # noqa: S108
            assert len(tmp) == 1, f"{where}: a writable /tmp is needed with a read-only root"
            assert "emptyDir" in volumes[tmp[0]["name"]], where


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_container_has_probes_resources_and_a_pinned_image(
    rendered: dict[str, list[Obj]], target: str
) -> None:
    for workload in _of(rendered[target], "Deployment"):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                check = container[probe]["httpGet"]
                assert check["port"] in ports or check["port"] in ports.values(), where
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                request = _quantity(resources["requests"][kind])
                limit = _quantity(resources["limits"][kind])
                assert 0 < request <= limit, f"{where}: {kind} request {request} > limit {limit}"
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest", f"{where}: pin the image tag ({image})"
            # The module's --port is the port the Service and the probes use.
            args = container["args"]
            i = next(i for i, a in enumerate(args) if a.startswith("--port"))
            port = int(args[i].split("=")[1]) if "=" in args[i] else int(args[i + 1])
            assert port in ports.values(), where


def test_probe_paths(rendered: dict[str, list[Obj]]) -> None:
    for target, objs in rendered.items():
        p = _prefix(target)
        (api,) = _one(objs, "Deployment", f"{p}qbo-api")["spec"]["template"]["spec"]["containers"]
        (sync,) = _one(objs, "Deployment", f"{p}qbo-sync")["spec"]["template"]["spec"]["containers"]
        assert api["args"][0] == "services.api"
        assert sync["args"][0] == "services.sync"
        assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert sync["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert sync["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {c["ports"][0]["containerPort"] for c in (api, sync)} == {8080, 8000}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_selectors_services_and_references_line_up(
    rendered: dict[str, list[Obj]], target: str
) -> None:
    objs = rendered[target]
    deployments = _of(objs, "Deployment")
    for d in deployments:
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert _matches(d["spec"]["selector"]["matchLabels"], labels), d["metadata"]["name"]
    # Each Deployment's selector picks its own pods only.
    for a in deployments:
        for b in deployments:
            if a is not b:
                labels = b["spec"]["template"]["metadata"]["labels"]
                assert not _matches(a["spec"]["selector"]["matchLabels"], labels)

    def selected(selector: dict[str, str]) -> list[Obj]:
        return [
            d
            for d in deployments
            if _matches(selector, d["spec"]["template"]["metadata"]["labels"])
        ]

    for svc in _of(objs, "Service"):
        (backend,) = selected(svc["spec"]["selector"])
        (container,) = backend["spec"]["template"]["spec"]["containers"]
        by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in svc["spec"]["ports"]:
            target_port = port["targetPort"]
            number = by_name[target_port] if isinstance(target_port, str) else target_port
            assert number in by_name.values(), f"{svc['metadata']['name']} -> {target_port}"
            assert port["port"] == number, "Service port and containerPort agree"
    for pdb in _of(objs, "PodDisruptionBudget"):
        assert len(selected(pdb["spec"]["selector"]["matchLabels"])) == 1
    for policy in _of(objs, "NetworkPolicy"):
        match = policy["spec"]["podSelector"].get("matchLabels", {})
        assert selected(match), f"NetworkPolicy {policy['metadata']['name']} selects no pods"

    config_maps = {o["metadata"]["name"] for o in _of(objs, "ConfigMap")}
    accounts = {o["metadata"]["name"] for o in _of(objs, "ServiceAccount")}
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        if "serviceAccountName" in pod:
            assert pod["serviceAccountName"] in accounts
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps


def test_scaling(rendered: dict[str, list[Obj]]) -> None:
    base = rendered["base"]
    (hpa,) = _of(base, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", "qbo-api")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # sync scales with the commands topic's partitions, not CPU: two replicas, never more
    # replicas than partitions.
    sync = _one(base, "Deployment", "qbo-sync")
    assert sync["spec"]["replicas"] == 2
    assert sync["spec"]["replicas"] <= int(_config(base)["COMMANDS_PARTITIONS"])
    assert _one(base, "Deployment", "qbo-api")["spec"]["replicas"] == hpa["spec"]["minReplicas"]
    for pdb in _of(base, "PodDisruptionBudget"):
        assert pdb["spec"]["maxUnavailable"] == 1

    dev = rendered["dev"]
    assert not _of(dev, "HorizontalPodAutoscaler")
    assert {d["spec"]["replicas"] for d in _of(dev, "Deployment")} == {1}


def test_network_policies(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["base"]
    deny = _one(objs, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    assert not deny.get("ingress")

    def ports(rules: list[Obj]) -> set[tuple[str, int]]:
        return {(p["protocol"], p["port"]) for rule in rules for p in rule.get("ports", [])}

    api = _one(objs, "NetworkPolicy", "qbo-api")["spec"]
    sync = _one(objs, "NetworkPolicy", "qbo-sync")["spec"]
    assert ports(api["ingress"]) == {("TCP", 8080)}
    assert ports(sync["ingress"]) == {("TCP", 8000)}
    # Each port admits only the ingress controller's namespace and the labelled callers, never
    # anyone (a rule without `from`).
    ingress_ns = {"namespaceSelector": {"matchLabels": {INGRESS_NS_LABEL: "ingress-nginx"}}}
    for spec, client_label in ((api, "qbo-sync/api-client"), (sync, "qbo-sync/sync-client")):
        (rule,) = spec["ingress"]
        assert rule["from"] == [
            ingress_ns,
            {"podSelector": {"matchLabels": {client_label: "true"}}},
        ]
    infra = {("UDP", 53), ("TCP", 53), ("TCP", 9092), ("TCP", 27017)}
    assert ports(api["egress"]) == infra, "the api never calls out to Intuit"
    assert ports(sync["egress"]) == infra | {("TCP", 443)}


def test_dev_overlay(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["dev"]
    (namespace,) = _of(objs, "Namespace")
    assert namespace["metadata"]["name"] == "qbo-sync-dev"
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "qbo-sync-dev"
            assert obj["metadata"]["name"].startswith("dev-")
    config = _config(objs)
    # Pods listen beyond loopback, where local mode's published secrets are refused.
    assert config["ENVIRONMENT"] not in ("local", "production")
    assert config["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert config["MONGODB_URI"] == "mongodb://mongodb:27017/"
    # Every in-cluster QBO endpoint is a Service of the overlay, on that Service's port.
    services = {s["metadata"]["name"]: s for s in _of(objs, "Service")}
    for key in ("QBO_API_BASE_URL", "QBO_OAUTH_TOKEN_URL", "QBO_OAUTH_REVOKE_URL"):
        url = urlsplit(config[key])
        assert url.hostname in services, f"{key} points at {url.hostname}, not a Service"
        assert url.port in {p["port"] for p in services[url.hostname]["spec"]["ports"]}
    # The emulator's webhooks reach sync's Service.
    (emulator,) = _one(objs, "Deployment", "dev-qbo-emulator")["spec"]["template"]["spec"][
        "containers"
    ]
    hook = urlsplit(
        next(a for a in emulator["args"] if a.startswith("--webhook-url=")).split("=")[1]
    )
    assert hook.hostname in services and hook.port == 8000

    def secret_env(name: str) -> dict[str, str]:
        (container,) = _one(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])}
        assert {r["name"] for r in refs.values()} <= {SECRET_NAME}
        return {env: r["key"] for env, r in refs.items()}

    own = {"MONGODB_URI", "QBO_CLIENT_ID", "QBO_CLIENT_SECRET"}  # ConfigMap, emulator defaults
    assert set(secret_env("dev-qbo-sync")) == SYNC_SECRETS - own
    assert set(secret_env("dev-qbo-api")) == API_SECRETS - own
    # The emulator signs webhooks with the verifier sync checks.
    assert secret_env("dev-qbo-emulator") == {
        "QBO_EMULATOR_WEBHOOK_VERIFIER_TOKEN": "QBO_WEBHOOK_VERIFIER_TOKEN"
    }
    policies = {p["metadata"]["name"]: p["spec"] for p in _of(objs, "NetworkPolicy")}
    emulator_from = policies["dev-qbo-emulator"]["ingress"][0]["from"]
    assert emulator_from == [{"podSelector": {"matchLabels": SYNC_POD}}]
    assert {"podSelector": {"matchLabels": EMULATOR_POD}} in [
        source for rule in policies["dev-qbo-sync"]["ingress"] for source in rule["from"]
    ]


def test_both_renderers_agree(rendered: dict[str, list[Obj]]) -> None:
    """The Go-built kustomize (the fallback where kubectl is missing) renders the same objects."""
    env = {**os.environ, "QBO_KUSTOMIZE": "go"}
    for name, target in TARGETS.items():
        docs = [d for d in yaml.safe_load_all(_render(target, env)) if d]
        assert docs == rendered[name]


def test_manifest_sources_hold_no_secret_looking_literals() -> None:
    """Belt and braces over the rendered checks: nothing in deploy/k8s looks like a credential."""
    suspicious = re.compile(
        r"(BEGIN [A-Z ]*PRIVATE KEY|://[^/\s:@]+:[^/\s@]+@|^\s*(data|stringData):\s*$)",
        re.MULTILINE,
    )
    for path in (ROOT / "deploy" / "k8s").rglob("*"):
        if path.is_file():
            hits = suspicious.findall(path.read_text())
            assert not hits, f"{path.relative_to(ROOT)}: {hits}"
