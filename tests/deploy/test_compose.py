"""docker-compose.yml and the image, checked without a Docker engine or a network.

The compose file is validated against the Compose Specification's JSON schema (the copy that
``check-jsonschema`` vendors, ``--builtin-schema vendor.compose-spec``), then read as Compose
would read it with no ``.env`` (YAML merge keys resolved, ``${VAR:-default}`` interpolated), and
the properties operators rely on are asserted. Every ``ANTECHAMBER_*`` variable it sets must be
one that a settings class of the code reads, and each service's environment must pass that
service's own settings validation (keys, URLs, port range). NATS' authentication is laid out
as the containers see it and a real nats-server is started on loopback from the compose
``nats.conf``, so the include path, the claims folder and every service's credential are
checked against the server itself.
"""

import ast
import asyncio
import copy
import importlib.util
import json
import os
import posixpath
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from nats.errors import Error as NatsError
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from runtime.embedded import free_port, nats_server_binary, stop_process, wait_for_port
from runtime.nats_auth import identity_options
from runtime.participant_tokens import ParticipantKeySettings
from runtime.sealing import SealingSettings
from runtime.settings import RuntimeSettings
from services.links.config import LinksSettings
from services.media.config import MediaSettings
from services.notify.config import NotifySettings
from services.scheduling.config import SchedulingSettings
from services.signaling.config import SignalingSettings
from web.config import WebSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CONFIG = ROOT / "deploy" / "compose"
OWN_IMAGE = "antechamber:local"
APPS = ("scheduling", "links", "signaling", "media", "notify", "web")
NATS_USERS = APPS[:-1]  # the web client needs no NATS
AUTH_VOLUME = "nats-auth"
# Published like `antechamber up` does: each service on its default port.
HOST_PORTS = {
    "web": 8100,
    "scheduling": 8101,
    "links": 8102,
    "signaling": 8103,
    "media": 8104,
    "notify": 8105,
}
OBSERVABILITY = {"otel-collector", "jaeger", "prometheus"}
SETTINGS: tuple[type[BaseSettings], ...] = (
    RuntimeSettings,
    SchedulingSettings,  # also holds the operator key
    LinksSettings,
    SignalingSettings,
    MediaSettings,
    NotifySettings,
    SealingSettings,
    ParticipantKeySettings,
    WebSettings,
)
# Read by the OpenTelemetry SDK's OTLP exporter, not by a settings class of ours.
OTEL_VARIABLES = {"OTEL_EXPORTER_OTLP_ENDPOINT"}
# A version: at least major.minor, optionally a variant (2.15.0-alpine, v3.13.3, 16.13).
VERSION_TAG = re.compile(r"v?\d+(\.\d+)+(-[A-Za-z0-9.]+)?")
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_]\w*))"
)


# --- reading the file as Compose does ---------------------------------------------------------


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``,
    ``${VAR:+alt}`` and ``$$``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg, current = match["op"], match["arg"] or "", env.get(name)
        present = current is not None if op and not op.startswith(":") else bool(current)
        if op in (":-", "-"):
            return current if present and current is not None else arg
        if op in (":?", "?"):
            if not present:
                raise ValueError(f"{name} is required: {arg}")
            return current or ""
        if op in (":+", "+"):
            return arg if present else ""
        return current or ""

    return VARIABLE.sub(substitute, value)


def resolved(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolved(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolved(value, env) for key, value in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merge keys resolved
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as ``docker compose config`` sees it without a .env file."""
    document: dict[str, Any] = resolved(raw_compose(), {})
    return document


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {name: str(value) for name, value in env.items()}


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The containers that run our image."""
    return {n: s for n, s in services(compose).items() if s.get("image") == OWN_IMAGE}


def flags(arguments: list[str]) -> dict[str, str]:
    return dict(zip(arguments[::2], arguments[1::2], strict=True))


def mounted(service: dict[str, Any], volume: str) -> tuple[str, bool] | None:
    """Where ``service`` mounts ``volume`` and whether read-only; None if it does not."""
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        if source == volume:
            return target, mode == ["ro"]
    return None


# --- the Compose Specification ----------------------------------------------------------------


def schema_errors(path: Path) -> list[dict[str, Any]]:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.fail("check-jsonschema is missing: pip install -e '.[test]'")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            "--output-format",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(result.stdout)
    errors: list[dict[str, Any]] = report["errors"] + report.get("parse_errors", [])
    assert (result.returncode == 0) == (report["status"] == "ok") == (not errors), result
    return errors


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(COMPOSE) == []


def _ports_not_a_list(document: dict[str, Any]) -> None:
    document["services"]["web"]["ports"] = "not-a-list"


def _unknown_top_level_key(document: dict[str, Any]) -> None:
    document["servics"] = {}


def _unknown_service_key(document: dict[str, Any]) -> None:
    document["services"]["notify"]["enviroment"] = {"ANTECHAMBER_LOG_LEVEL": "info"}


def _bad_depends_on_condition(document: dict[str, Any]) -> None:
    document["services"]["links"]["depends_on"]["migrate"]["condition"] = "service_finished"


@pytest.mark.parametrize(
    "breakage",
    [_ports_not_a_list, _unknown_top_level_key, _unknown_service_key, _bad_depends_on_condition],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_broken_compose_file_is_refused(
    tmp_path: Path, breakage: Callable[[dict[str, Any]], None]
) -> None:
    document = copy.deepcopy(raw_compose())
    breakage(document)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(document, sort_keys=False))
    assert schema_errors(broken), "the schema check let a broken file through"


# --- images ---------------------------------------------------------------------------------


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        image = service["image"]
        if "build" in service:
            assert image == OWN_IMAGE, name
            continue
        repository, _, tag = image.rpartition("/")[2].partition(":")
        assert repository, name
        assert tag != "latest", f"{name}: {image}"
        assert VERSION_TAG.fullmatch(tag.partition("@")[0]), f"{name}: {image} has no version"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert base, "the Dockerfile names its base image in ARG PYTHON_IMAGE"
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base[1]), base[1]


def final_stage(dockerfile: str) -> str:
    stages = re.split(r"^FROM\s", dockerfile, flags=re.M)
    assert len(stages) >= 3, "multi-stage: a builder and a runtime stage"
    return stages[-1]


def test_the_image_is_slim_unprivileged_and_health_checked() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = final_stage(dockerfile)
    assert runtime.startswith("${PYTHON_IMAGE} AS runtime")
    assert "build-essential" not in runtime
    assert "apt-get install" not in runtime
    user = re.search(r"^USER\s+(\S+)$", runtime, re.M)
    assert user, "the runtime stage sets a user"
    assert user[1].split(":")[0] not in ("0", "root")
    instructions = runtime.replace("\\\n", " ")  # continuation lines joined
    check = re.search(r"^HEALTHCHECK\s.*?\sCMD\s+(\[.*\])$", instructions, re.M)
    assert check, "the runtime stage has a HEALTHCHECK"
    command = json.loads(check[1])
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "http://127.0.0.1:8080/healthz" in command[2]
    compile(command[2], "HEALTHCHECK", "exec")
    assert re.search(r'^ENTRYPOINT \["antechamber"\]$', runtime, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git", "tests"} <= set(ignored)


# --- the platform -----------------------------------------------------------------------------


def test_nats_runs_jetstream_from_its_config_file(compose: dict[str, Any]) -> None:
    nats = services(compose)["nats"]
    command = nats["command"]
    config_path = command[command.index("-c") + 1]
    assert f"./deploy/compose/nats.conf:{config_path}:ro" in nats["volumes"]
    text = re.sub(r"#.*", "", (CONFIG / "nats.conf").read_text())
    block = re.search(r"\bjetstream\s*[:=]?\s*\{(?P<body>[^}]*)\}", text)
    assert block, "nats.conf enables JetStream"
    settings = dict(re.findall(r"(\w+)\s*[:=]\s*([^\s,]+)", block["body"]))
    assert settings["sync_interval"] == "always"
    store = settings["store_dir"]
    volume = next(v for v in nats["volumes"] if v.endswith(f":{store}"))
    assert volume.split(":")[0] in compose["volumes"], "JetStream's store is a named volume"
    assert "healthcheck" in nats


# --- NATS authentication ----------------------------------------------------------------------


def auth_maker(compose: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The one-shot service that makes the NATS authentication set, and its flags."""
    maker = services(compose)[AUTH_VOLUME]
    assert maker["command"][:2] == ["nats-auth", "init"]
    return maker, flags(maker["command"][2:])


def test_the_nats_credentials_are_made_once_before_nats_starts(compose: dict[str, Any]) -> None:
    maker, arguments = auth_maker(compose)
    assert maker["image"] == OWN_IMAGE
    assert maker["restart"] == "no"
    assert AUTH_VOLUME in compose["volumes"]
    assert mounted(maker, AUTH_VOLUME) == (arguments["--dir"], False)
    # It writes as the image's user: into a folder the image gives that user, which a new
    # named volume mounted there takes as its owner (elsewhere it would be root's).
    runtime = final_stage((ROOT / "Dockerfile").read_text()).replace("\\\n", " ")
    user = re.search(r"^USER\s+(\d+)", runtime, re.M)
    assert user, "the runtime stage sets a numeric user"
    owned = rf"install -d -o {user[1]} -g \d+ -m 0?7[0-7]0 {re.escape(arguments['--dir'])}(\s|$)"
    assert re.search(owned, runtime, re.M), "the image gives its user the folder written to"

    nats = services(compose)["nats"]
    assert nats["depends_on"][AUTH_VOLUME]["condition"] == "service_completed_successfully"
    store = mounted(nats, "nats-data")
    assert store is not None
    assert arguments["--jwt-dir"].startswith(store[0] + "/"), "claims kept on nats' volume"
    auth = mounted(nats, AUTH_VOLUME)
    assert auth is not None
    assert auth[1], "nats reads the set, read-only"


def test_the_nats_config_includes_the_auth_file_from_the_volume(compose: dict[str, Any]) -> None:
    nats = services(compose)["nats"]
    command = nats["command"]
    config_path = command[command.index("-c") + 1]
    auth = mounted(nats, AUTH_VOLUME)
    assert auth is not None
    text = re.sub(r"#.*", "", (CONFIG / "nats.conf").read_text())
    (included,) = re.findall(r'^\s*include\s+"?([^"\s]+)"?\s*$', text, re.M)
    # nats-server joins an include to the including file's folder, even one written absolute.
    resolved_path = posixpath.normpath(f"{posixpath.dirname(config_path)}/{included}")
    assert resolved_path == f"{auth[0]}/nats-auth.conf"
    assert not re.search(r"\b(no_auth_user|authorization|accounts)\b", text), (
        "no identity besides the operator's"
    )
    assert "8222" in " ".join(nats["healthcheck"]["test"]), "monitoring needs no credentials"


@pytest.mark.parametrize("name", NATS_USERS)
def test_each_service_connects_to_nats_as_its_own_user(compose: dict[str, Any], name: str) -> None:
    service = services(compose)[name]
    auth = mounted(service, AUTH_VOLUME)
    assert auth is not None, f"{name} mounts the credentials"
    assert auth[1], "read-only"
    env = environment(service)
    assert env["ANTECHAMBER_NATS_CREDS"] == f"{auth[0]}/creds/{name}.creds"
    made = service["depends_on"][AUTH_VOLUME]["condition"]
    assert made == "service_completed_successfully", "written before it is read"
    if name == "scheduling":  # it issues and revokes integrators' credentials
        assert env["ANTECHAMBER_NATS_ISSUER_FILE"] == f"{auth[0]}/issuer.json"
    else:
        assert "ANTECHAMBER_NATS_ISSUER_FILE" not in env
    assert "ANTECHAMBER_NATS_CREDS_DIR" not in env, "its own file, not the folder"


def test_only_nats_and_its_users_mount_the_credentials(compose: dict[str, Any]) -> None:
    found = services(compose)
    readers = {n for n, s in found.items() if mounted(s, AUTH_VOLUME)}
    assert readers == {AUTH_VOLUME, "nats", *NATS_USERS}
    serving = {n for n, s in ours(compose).items() if s.get("command", [None])[0] == "serve"}
    with_creds = {n for n in serving if "ANTECHAMBER_NATS_CREDS" in environment(found[n])}
    assert with_creds == set(NATS_USERS)


def test_nats_starts_from_the_compose_config_and_admits_only_the_credentials(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The volumes laid out under ``tmp_path`` as nats sees them, the set made there by the
    command the one-shot service runs, nats-server started from the compose ``nats.conf``
    (its ports moved to free ones on loopback, its store under ``tmp_path``)."""
    _, arguments = auth_maker(compose)
    nats_service = services(compose)["nats"]
    config_path = nats_service["command"][nats_service["command"].index("-c") + 1]
    auth, store = mounted(nats_service, AUTH_VOLUME), mounted(nats_service, "nats-data")
    assert auth is not None
    assert store is not None

    def inside(path: str) -> Path:
        return tmp_path / "root" / path.lstrip("/")

    jwt_dir = inside(arguments["--jwt-dir"])
    subprocess.run(
        [
            *(sys.executable, "-m", "antechamber", "nats-auth", "init"),
            *("--dir", str(inside(auth[0])), "--jwt-dir", str(jwt_dir)),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    config = (CONFIG / "nats.conf").read_text()
    assert f"store_dir: {store[0]}\n" in config, "JetStream's store is on the nats-data volume"
    inside(config_path).parent.mkdir(parents=True, exist_ok=True)
    inside(config_path).write_text(
        config.replace(
            f"store_dir: {store[0]}\n", f"store_dir: {json.dumps(str(inside(store[0])))}\n"
        )
    )
    port, monitor = free_port(), free_port()
    log_file = tmp_path / "nats-server.log"
    with open(log_file, "wb") as log:
        server = subprocess.Popen(
            [
                *(nats_server_binary(), "-c", str(inside(config_path))),
                *("-a", "127.0.0.1", "-p", str(port), "-m", str(monitor)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,  # not the config's folder: the include must not depend on it
        )
    try:
        try:
            wait_for_port(port, 15)
        except TimeoutError:
            pytest.fail(f"nats-server did not start: {log_file.read_text()}")
        health = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
        with urllib.request.urlopen(health, timeout=5) as answer:
            assert answer.status == 200
        creds = {}
        for name in NATS_USERS:
            service = services(compose)[name]
            own = mounted(service, AUTH_VOLUME)
            assert own is not None
            path = environment(service)["ANTECHAMBER_NATS_CREDS"]
            creds[name] = inside(auth[0] + path.removeprefix(own[0]))
        asyncio.run(_only_credentials_connect(f"nats://127.0.0.1:{port}", creds))
        assert any(jwt_dir.glob("*.jwt")), "the resolver keeps the account claims there"
    finally:
        stop_process(server, 10)


async def _only_credentials_connect(url: str, creds: Mapping[str, Path]) -> None:
    with pytest.raises(NatsError, match="Authorization Violation"):
        await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    for name, path in creds.items():
        nc = await nats.connect(url, name=name, allow_reconnect=False, **identity_options(path))
        try:
            await nc.jetstream().account_info()  # JetStream is on for the platform account
        finally:
            await nc.close()


def test_postgres_has_a_named_volume_and_a_healthcheck(compose: dict[str, Any]) -> None:
    postgres = services(compose)["postgres"]
    mounts = dict(v.split(":")[1::-1] for v in postgres["volumes"])
    assert mounts["/var/lib/postgresql/data"] in compose["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_the_migration_runs_once_and_every_service_waits_for_it(compose: dict[str, Any]) -> None:
    found = services(compose)
    migrate = found["migrate"]
    assert migrate["image"] == OWN_IMAGE
    assert migrate["command"] == ["migrate", "--all"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    serving = {n for n, s in ours(compose).items() if s.get("command", [None])[0] == "serve"}
    assert serving == set(APPS)
    for name in serving:
        depends = found[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name


@pytest.mark.parametrize("name", APPS)
def test_each_app_serves_its_role_on_8080(compose: dict[str, Any], name: str) -> None:
    service = services(compose)[name]
    assert service["image"] == OWN_IMAGE
    assert service["command"] == ["serve", name, "--host", "0.0.0.0", "--port", "8080"]
    assert f"{HOST_PORTS[name]}:8080" in service["ports"]
    assert service["healthcheck"]["test"][0] == "CMD"
    assert service.get("profiles") is None, "the platform runs without a profile"


def test_notify_sends_to_the_mail_sink(compose: dict[str, Any]) -> None:
    found = services(compose)
    sink = found["mailsink"]
    assert sink["image"] == OWN_IMAGE
    assert sink["entrypoint"] == ["python", "-m", "antechamber.mailsink"]
    arguments = flags(sink["command"])
    usage = subprocess.run(
        [sys.executable, "-m", "antechamber.mailsink", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    ).stdout
    assert all(flag in usage for flag in arguments), "flags the mail sink really takes"
    assert arguments.get("--host") == "0.0.0.0", (
        "by default it binds 127.0.0.1, out of notify's reach"
    )
    assert arguments["--dir"].startswith(tuple(v.split(":")[1] for v in sink["volumes"]))
    assert f"127.0.0.1:{arguments['--http-port']}:{arguments['--http-port']}" in sink["ports"]
    assert "/readyz" in " ".join(sink["healthcheck"]["test"])
    env = environment(found["notify"])
    assert env["ANTECHAMBER_NOTIFY_SMTP_HOST"] == "mailsink"
    assert env["ANTECHAMBER_NOTIFY_SMTP_PORT"] == arguments["--smtp-port"] == "1025"
    assert env["ANTECHAMBER_NOTIFY_SMTP_SECURITY"] == "none"
    assert "mailsink" in found["notify"]["depends_on"]


def test_observability_is_an_optional_profile(compose: dict[str, Any]) -> None:
    found = services(compose)
    profiled = {n for n, s in found.items() if s.get("profiles")}
    assert profiled == OBSERVABILITY
    for name in OBSERVABILITY:
        assert found[name]["profiles"] == ["observability"]
    for name, service in found.items():
        if name not in OBSERVABILITY:
            assert not OBSERVABILITY & set(service.get("depends_on", [])), name
    for name in APPS[:-1]:
        env = environment(found[name])
        assert env["ANTECHAMBER_OTEL_EXPORTER"] == "none", "off unless asked for"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"

    collector = found["otel-collector"]
    assert collector["image"].startswith("otel/opentelemetry-collector")
    mounted = {v.split(":")[0]: v.split(":")[1] for v in collector["volumes"]}
    config_path = mounted["./deploy/compose/otel-collector.yaml"]
    assert f"--config={config_path}" in collector["command"]
    config = yaml.safe_load((CONFIG / "otel-collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    (to_viewer,) = traces["exporters"]
    assert config["exporters"][to_viewer]["endpoint"].startswith("jaeger:")
    metrics = config["service"]["pipelines"]["metrics"]
    assert "prometheus" in metrics["exporters"]
    assert found["jaeger"]["image"].startswith("jaegertracing/")

    prometheus = found["prometheus"]
    mounted = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"]}
    config_path = mounted["./deploy/compose/prometheus.yml"]
    assert f"--config.file={config_path}" in prometheus["command"]
    scrape = yaml.safe_load((CONFIG / "prometheus.yml").read_text())["scrape_configs"]
    (antechamber,) = [job for job in scrape if job["job_name"] == "antechamber"]
    assert antechamber["metrics_path"] == "/metrics"
    targets = {t for group in antechamber["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:8080" for name in APPS}


# --- environment variables --------------------------------------------------------------------


def env_names(settings: type[BaseSettings]) -> set[str]:
    """The variables a settings class reads: prefix + field name, or the field's alias."""
    prefix = settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        else:
            names.add(f"{prefix}{name}".upper())
    return names


KNOWN = set().union(*(env_names(s) for s in SETTINGS))


def test_the_settings_classes_listed_here_are_all_there_are() -> None:
    found = set()
    for package in ("antechamber", "contracts", "runtime", "services", "web"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                    getattr(base, "id", getattr(base, "attr", None)) == "BaseSettings"
                    for base in node.bases
                ):
                    found.add(node.name)
    assert found == {s.__name__ for s in SETTINGS}, "add a new settings class to SETTINGS"


def test_the_known_names_are_what_the_code_reads() -> None:
    assert {"DATABASE_URL", "NATS_URL", "ANTECHAMBER_OPERATOR_KEY"} <= KNOWN
    assert {"ANTECHAMBER_MEDIA_UDP_PORT_MIN", "ANTECHAMBER_MEDIA_UDP_PORT_MAX"} <= KNOWN
    assert "ANTECHAMBER_MEDIA_UDP_PORTS" not in KNOWN, "a name nothing reads"


def test_every_variable_set_is_one_the_code_reads(compose: dict[str, Any]) -> None:
    for name, service in ours(compose).items():
        unknown = set(environment(service)) - KNOWN - OTEL_VARIABLES
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
    image_env = re.findall(r"\b(ANTECHAMBER_\w+)=", (ROOT / "Dockerfile").read_text())
    assert set(image_env) <= KNOWN


def _with_env(
    monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str], check: Callable[[], object]
) -> None:
    with monkeypatch.context() as patch:
        for name in list(os.environ):
            if name.upper() in KNOWN:
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        check()


def _sealer() -> object:
    return SealingSettings().sealer()


def _participant_key() -> object:
    return ParticipantKeySettings().key()


def _operator_key() -> object:
    assert SchedulingSettings().operator_key_hash() is not None
    return None


STARTS: dict[str, list[Callable[[], object]]] = {
    "migrate": [RuntimeSettings],
    "scheduling": [RuntimeSettings, SchedulingSettings, _operator_key, _sealer],
    "links": [RuntimeSettings, LinksSettings, _sealer],
    "signaling": [RuntimeSettings, SignalingSettings, _participant_key],
    "media": [RuntimeSettings, MediaSettings, _participant_key],
    "notify": [RuntimeSettings, NotifySettings, _sealer],
    "web": [RuntimeSettings, WebSettings],
}


@pytest.mark.parametrize("name", list(STARTS))
def test_each_service_gets_the_settings_it_needs(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """What the service reads at start passes validation with the file's defaults."""
    env = environment(services(compose)[name])
    for check in STARTS[name]:
        _with_env(monkeypatch, env, check)
    if name != "web":  # the web client needs neither Postgres nor NATS
        assert env["DATABASE_URL"].startswith("postgresql://antechamber:")
        assert env["DATABASE_URL"].endswith("@postgres:5432/antechamber")
        assert env["NATS_URL"] == "nats://nats:4222"


def test_the_web_client_and_links_agree_on_addresses(compose: dict[str, Any]) -> None:
    found = services(compose)
    assert environment(found["links"])["ANTECHAMBER_PUBLIC_URL"] == "http://localhost:8100"
    signaling_url = environment(found["web"])["ANTECHAMBER_WEB_SIGNALING_URL"]
    assert signaling_url == "ws://localhost:8103/v1/signaling"
    assert environment(found["media"])["ANTECHAMBER_MEDIA_PUBLIC_URL"] == "http://localhost:8104"


def test_media_publishes_the_udp_range_it_binds(compose: dict[str, Any]) -> None:
    media = services(compose)["media"]
    env = environment(media)
    first = int(env["ANTECHAMBER_MEDIA_UDP_PORT_MIN"])
    last = int(env["ANTECHAMBER_MEDIA_UDP_PORT_MAX"])
    assert f"{first}-{last}:{first}-{last}/udp" in media["ports"], "host port = container port"
    assert last - first + 1 >= 16 * int(env["ANTECHAMBER_MEDIA_MAX_ROOMS"])
    recordings = env["ANTECHAMBER_MEDIA_RECORDINGS_DIR"]
    (volume,) = [v for v in media["volumes"] if recordings.startswith(v.split(":")[1] + "/")]
    name, _, *mode = volume.split(":")
    assert name in compose["volumes"]
    assert mode != ["ro"], "recordings go to a writable volume"
    assert media["read_only"] is True


def test_secrets_default_to_marked_development_values(compose: dict[str, Any]) -> None:
    secrets = raw_compose()["x-secrets"]
    assert set(secrets) == {"postgres-password", "operator-key", "link-key", "participant-key"}
    for name, value in secrets.items():
        match = VARIABLE.fullmatch(value)
        assert match, f"{name} is one variable with a default"
        assert match["op"] == ":-", name
        assert match["arg"].startswith("change-me"), f"{name}'s default says 'change me'"
    found = services(compose)
    sealing = {
        environment(found[n])["ANTECHAMBER_LINK_KEY"] for n in ("scheduling", "links", "notify")
    }
    assert len(sealing) == 1, "one link key for every service that seals or opens links"
    signing = {environment(found[n])["ANTECHAMBER_PARTICIPANT_KEY"] for n in ("signaling", "media")}
    assert len(signing) == 1, "signaling signs with the key media checks"


def test_overriding_a_variable_reaches_the_services() -> None:
    env = {"ANTECHAMBER_LINK_KEY": "k" * 43, "POSTGRES_PASSWORD": "s3cret"}
    found = services(resolved(raw_compose(), env))
    assert environment(found["notify"])["ANTECHAMBER_LINK_KEY"] == "k" * 43
    assert ":s3cret@" in environment(found["links"])["DATABASE_URL"]
    assert environment(found["postgres"])["POSTGRES_PASSWORD"] == "s3cret"


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        node = list(node.values())
    return [s for item in node for s in strings(item)] if isinstance(node, list) else []


def test_the_env_example_lists_every_variable_with_its_default() -> None:
    defaults: dict[str, set[str]] = {}
    for text in strings(raw_compose()):
        for match in VARIABLE.finditer(text):
            if match["braced"]:
                defaults.setdefault(match["braced"], set()).add(match["arg"] or "")
    example: dict[str, set[str]] = {}
    lines = (CONFIG / "env.example").read_text()
    for name, value in re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", lines, re.M):
        example.setdefault(name, set()).add(value)
    assert set(defaults) == set(example)
    for name, values in defaults.items():
        assert values <= example[name], f"{name}: env.example shows another default"
