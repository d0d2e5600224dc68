"""The Helm chart, rendered by Helm's own Go SDK and checked without a cluster.

Each values file in ``deploy/helm/antechamber/ci/`` is rendered (``helm_python``, which also
applies ``values.schema.json``), every manifest is validated against the Kubernetes API schema
of a current release (``kubernetes-validate``, strict: unknown fields are errors), and the
properties operators rely on are asserted.
"""

import json
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "antechamber"
VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBERNETES = kubernetes_validate.latest_version()
COMPONENTS = {"scheduling", "links", "signaling", "media", "notify", "web"}
NATS_USERS = COMPONENTS - {"web"}  # the web client needs no NATS
NATS_DIR = "/var/run/antechamber/nats"
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def render(values: dict[str, Any], name: str = "ac") -> list[dict[str, Any]]:
    chart = helm_python.Chart.load(CHART)
    try:
        rendered = chart.render(values, name=name, namespace="clinics", is_install=True)
    finally:
        chart.close()
    return [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def values_of(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def minimal() -> dict[str, Any]:
    return values_of(CHART / "ci" / "minimal-values.yaml")


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Resources of one kind by their component label (or name)."""
    return {
        d["metadata"].get("labels", {}).get("app.kubernetes.io/component", d["metadata"]["name"]): d
        for d in docs
        if d["kind"] == kind
    }


@pytest.fixture(scope="module", params=VALUES, ids=lambda p: p.stem)
def rendered(request: pytest.FixtureRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = values_of(request.param)
    return values, render(values)


def test_every_manifest_is_valid_for_a_current_kubernetes(
    rendered: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_every_workload_is_probed_bounded_and_unprivileged(
    rendered: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = rendered
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == COMPONENTS
    pods = [d["spec"]["template"]["spec"] for d in deployments.values()]
    pods += [j["spec"]["template"]["spec"] for j in of_kind(docs, "Job").values()]
    for pod in pods:
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            image = container["image"]
            assert ":" in image, image
            assert not image.endswith(":latest"), image
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
            assert "memory" in resources["limits"], container["name"]
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:3] == ["antechamber", "serve", name]
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    tag = values.get("image", {}).get("tag")
    if tag:
        assert all(
            d["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":{tag}")
            for d in deployments.values()
        )


def test_migrations_run_as_a_hook_before_install_and_upgrade(
    rendered: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = rendered
    job = of_kind(docs, "Job")["migrate"]
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["antechamber", "migrate", "--all"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    secrets = [d for d in docs if d["kind"] == "Secret"]
    if values.get("existingSecret"):
        assert secrets == [], "an existing Secret is used, none is made"
        refs = {
            e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e
        }
        assert refs == {values["existingSecret"]}
    else:
        (secret,) = secrets
        weights = (
            secret["metadata"]["annotations"]["helm.sh/hook-weight"],
            hooks["helm.sh/hook-weight"],
        )
        assert int(weights[0]) < int(weights[1]), "the Secret exists before the Job runs"
        assert {
            "DATABASE_URL",
            "NATS_URL",
            "ANTECHAMBER_LINK_KEY",
            "ANTECHAMBER_PARTICIPANT_KEY",
        } <= set(secret["stringData"])


def nats_credentials(pod: dict[str, Any], secret: str) -> dict[str, Any] | None:
    """The pod's volume of the NATS credentials Secret, if it has one."""
    found = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret]
    assert len(found) <= 1
    return found[0] if found else None


def test_each_service_mounts_only_its_own_nats_credential(
    rendered: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = rendered
    secret = values["nats"]["auth"]["secretName"]
    keys = values_of(CHART / "values.yaml")["nats"]["auth"]["keys"]
    mounted: dict[str, str] = {}
    for name, deployment in of_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        volume = nats_credentials(pod, secret)
        if name not in NATS_USERS:
            assert volume is None, f"{name} needs no NATS credentials"
            assert not {"ANTECHAMBER_NATS_CREDS", "ANTECHAMBER_NATS_ISSUER_FILE"} & set(env)
            continue
        assert volume is not None, f"{name} mounts no NATS credential"
        assert volume["secret"]["defaultMode"] == 0o400
        items = {item["key"]: item["path"] for item in volume["secret"]["items"]}
        own = {keys[name]: f"{name}.creds"}
        if name == "scheduling":
            own[keys["issuer"]] = "issuer.json"
        assert items == own, f"{name} mounts exactly its own credential"
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True
        assert mount["mountPath"] == NATS_DIR
        assert env["ANTECHAMBER_NATS_CREDS"] == f"{NATS_DIR}/{name}.creds"
        if name == "scheduling":
            assert env["ANTECHAMBER_NATS_ISSUER_FILE"] == f"{NATS_DIR}/issuer.json"
        else:
            assert "ANTECHAMBER_NATS_ISSUER_FILE" not in env, "only scheduling issues"
        for key in items:
            assert key not in mounted, f"{key} is mounted by {mounted.get(key)} and {name}"
            mounted[key] = name
        # 0400 files: the service reads them through the pod's fsGroup, which kubelet lets read.
        assert pod["securityContext"].get("fsGroup") is not None
    for job in of_kind(docs, "Job").values():
        assert nats_credentials(job["spec"]["template"]["spec"], secret) is None, (
            "the migration reaches Postgres only"
        )


def test_the_nats_credential_key_names_can_be_changed() -> None:
    values = minimal()
    values["nats"]["auth"] |= {"keys": {"links": "links-user", "issuer": "nats-issuer"}}
    deployments = of_kind(render(values), "Deployment")
    links = nats_credentials(deployments["links"]["spec"]["template"]["spec"], "antechamber-nats")
    assert links is not None
    assert links["secret"]["items"] == [{"key": "links-user", "path": "links.creds"}]
    scheduling = deployments["scheduling"]["spec"]["template"]["spec"]
    issuer = nats_credentials(scheduling, "antechamber-nats")
    assert issuer is not None
    assert {"key": "nats-issuer", "path": "issuer.json"} in issuer["secret"]["items"]


def test_disruption_budgets_and_autoscalers_follow_the_values(
    rendered: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = rendered
    defaults = values_of(CHART / "values.yaml")["services"]
    chosen = {
        name: defaults[name] | values.get("services", {}).get(name, {}) for name in COMPONENTS
    }
    scaled = {n for n, s in chosen.items() if s["autoscaling"].get("enabled")}
    assert set(of_kind(docs, "HorizontalPodAutoscaler")) == scaled
    budgets = of_kind(docs, "PodDisruptionBudget")
    expected = {n for n, s in chosen.items() if s["replicaCount"] > 1 or n in scaled}
    assert set(budgets) == expected
    for name, deployment in of_kind(docs, "Deployment").items():
        assert ("replicas" in deployment["spec"]) == (name not in scaled)


def test_media_gets_its_port_range_recordings_and_turn(
    rendered: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, docs = rendered
    media = values_of(CHART / "values.yaml")["media"] | values.get("media", {})
    pod = of_kind(docs, "Deployment")["media"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    first, last = media["udpPortRange"].split("-")
    assert env["ANTECHAMBER_MEDIA_UDP_PORT_MIN"]["value"] == first
    assert env["ANTECHAMBER_MEDIA_UDP_PORT_MAX"]["value"] == last
    assert env["ANTECHAMBER_MEDIA_RECORDINGS_DIR"]["value"] == "/recordings"
    assert "/recordings" in {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert env["ANTECHAMBER_MEDIA_ICE_SERVERS"]["valueFrom"]["secretKeyRef"]["optional"] is True
    if media.get("iceAddresses"):
        assert json.loads(env["ANTECHAMBER_MEDIA_ICE_ADDRESSES"]["value"]) == media["iceAddresses"]
    assert pod.get("hostNetwork", False) == media["hostNetwork"]
    if media["hostNetwork"]:
        anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    web = {
        e["name"]
        for e in of_kind(docs, "Deployment")["web"]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert "ANTECHAMBER_WEB_ICE_SERVERS" in web, "browsers get the TURN server too"
    secret = [d for d in docs if d["kind"] == "Secret"]
    if media.get("turn", {}).get("enabled") and secret:
        servers = json.loads(secret[0]["stringData"]["ICE_SERVERS"])
        assert servers[0]["urls"] == media["turn"]["urls"]


def test_the_ingress_carries_websockets_and_tls_to_the_web_client_and_signaling() -> None:
    values = values_of(CHART / "ci" / "production-values.yaml")
    docs = render(values)
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    spec = ingress["spec"]
    assert spec["tls"][0]["secretName"] == "video-example-org-tls"
    assert "video.example.org" in spec["tls"][0]["hosts"]
    rules = {r["host"]: r["http"]["paths"] for r in spec["rules"]}
    paths = {p["path"]: p["backend"]["service"]["name"] for p in rules["video.example.org"]}
    assert paths == {"/v1/signaling": "ac-antechamber-signaling", "/": "ac-antechamber-web"}
    assert (
        rules["api.video.example.org"][0]["backend"]["service"]["name"]
        == "ac-antechamber-scheduling"
    )
    assert (
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
        == "3600"
    )
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["ANTECHAMBER_PUBLIC_URL"] == "https://video.example.org"
    assert config["ANTECHAMBER_WEB_SIGNALING_URL"] == "wss://video.example.org/v1/signaling"
    assert set(of_kind(docs, "NetworkPolicy")) == COMPONENTS
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_nothing_optional_is_made_by_default() -> None:
    kinds = {d["kind"] for d in render(minimal())}
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    }


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"image": {"repository": "antechamber", "tag": "latest"}}, "/image/tag"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"publicUrl": "video.example.org"}, "/publicUrl"),
        ({"linkKey": "too-short"}, "/linkKey"),
        ({"media": {"udpPortRange": "40000"}}, "/media/udpPortRange"),
        ({"smtp": {"security": "ssl"}}, "/smtp/security"),
        ({"services": {"web": {"enabled": True, "replicaCount": -1}}}, "/services/web"),
        ({"nats": {"auth": {"secretName": "NATS creds"}}}, "/nats/auth/secretName"),
        ({"nats": {"auth": {"keys": {"web": "web.creds"}}}}, "additional properties 'web'"),
    ],
)
def test_values_that_break_the_schema_are_refused(change: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="schema") as refused:
        render(minimal() | change)
    assert complaint in str(refused.value)


def test_an_install_without_its_keys_is_refused_with_the_reason() -> None:
    values = minimal()
    del values["participantKey"]
    with pytest.raises(helm_python.HelmRenderError, match="participantKey is required"):
        render(values)


def test_an_install_without_nats_credentials_is_refused_with_the_reason() -> None:
    values = minimal()
    del values["nats"]["auth"]["secretName"]
    with pytest.raises(helm_python.HelmRenderError, match=r"nats\.auth\.secretName is required"):
        render(values)


def test_the_validation_can_fail() -> None:
    """A manifest with a field Kubernetes does not have is refused, so the checks above mean
    something."""
    deployment = next(d for d in render(minimal()) if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
