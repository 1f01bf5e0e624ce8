"""The Kubernetes manifests: schema-valid for a current release, and saying what the seed promises.

Kubernetes cannot run here, so besides the schema (kubernetes-validate, strict:
unknown fields are errors) these tests check the relations a cluster would
only reveal at run time: selectors that match their pods, Services and probes
that name ports the containers have, the Service variables Kubernetes injects
(which collide with WTC_*_PORT settings unless the manifests guard them).
"""

from __future__ import annotations

import copy
import re

import kubernetes_validate
import pytest
import yaml
from deploytools import MANIFESTS, ROOT, load_manifest

from watercolor.config import ConfigError, describe, load_settings

K8S_VERSION = kubernetes_validate.latest_version()
GPU_PATCH = ROOT / "deploy" / "wtc-process_gpu-patch.yml"


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict) -> dict[str, dict]:
    return {item["name"]: item for item in c.get("env", [])}


def quantity(text: str | int) -> float:
    """A Kubernetes quantity (2Gi, 250m, 1) as a number."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text)).groups()
    return float(number) * units[unit]


@pytest.mark.parametrize("key", sorted(MANIFESTS))
def test_valid_against_the_current_kubernetes_schema(key):
    kubernetes_validate.validate(load_manifest(key), K8S_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field():
    broken = copy.deepcopy(load_manifest("process_deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kinds_names_and_current_api_versions():
    expected = {
        "api_deployment": ("apps/v1", "Deployment", "wtc-api"),
        "process_deployment": ("apps/v1", "Deployment", "wtc-process"),
        "api_service": ("v1", "Service", "wtc-api"),
        "process_service": ("v1", "Service", "wtc-process"),
        "process_networkpolicy": ("networking.k8s.io/v1", "NetworkPolicy", "wtc-process"),
    }
    for key, (api_version, kind, name) in expected.items():
        m = load_manifest(key)
        assert (m["apiVersion"], m["kind"], m["metadata"]["name"]) == (api_version, kind, name), key


@pytest.mark.parametrize("key", sorted(MANIFESTS))
def test_recommended_labels(key):
    labels = load_manifest(key)["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "watercolor"
    assert labels["app.kubernetes.io/name"] in ("wtc-api", "wtc-process")
    assert "app.kubernetes.io/component" in labels


def test_replicas_as_the_seed_says():
    api, process = load_manifest("api_deployment"), load_manifest("process_deployment")
    assert api["spec"]["replicas"] == 1
    assert process["spec"]["replicas"] == 3
    text = (ROOT / MANIFESTS["api_deployment"]).read_text()
    comment = text[:text.index("replicas:")].rsplit("spec:", 1)[1]
    assert "not supported" in comment, "the API's replicas need the comment that more is not supported"
    # Never two API pods, not even while an update rolls out.
    assert api["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("name", ["api", "process"])
def test_selectors_match_their_pods_and_services(name):
    deployment = load_manifest(f"{name}_deployment")
    service = load_manifest(f"{name}_service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # The selector holds only labels that never change (no version, no component churn).
    assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/part-of"}


@pytest.mark.parametrize("name, port", [("api", 5000), ("process", 32017)])
def test_named_ports_used_by_services_and_probes(name, port):
    deployment, service = load_manifest(f"{name}_deployment"), load_manifest(f"{name}_service")
    c = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port in ports.values()
    for sp in service["spec"]["ports"]:
        assert sp["port"] == port
        assert sp["targetPort"] in ports, "the Service must target a named container port"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = c[probe]
        if "httpGet" in handler:
            assert handler["httpGet"]["port"] in ports


def test_services_types():
    assert load_manifest("api_service")["spec"]["type"] == "NodePort"  # reachable from the host
    assert load_manifest("process_service")["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_api_probes_mean_something():
    c = container(load_manifest("api_deployment"))
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_backend_probes_use_the_protocol_ping():
    c = container(load_manifest("process_deployment"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = c[probe]["exec"]["command"]
        assert command[:2] == ["watercolor", "ping"]
        assert command[-1] == "127.0.0.1:32017"
        assert c[probe]["timeoutSeconds"] >= 2
        # Only liveness takes a BUSY answer: a full or draining backend is alive, not ready.
        assert ("--alive" in command) == (probe == "livenessProbe")


@pytest.mark.parametrize("name", ["api", "process"])
def test_images_work_with_minikubes_local_images(name):
    c = container(load_manifest(f"{name}_deployment"))
    assert c["image"].split(":")[0] == f"wtc-{name}"
    assert c["imagePullPolicy"] in ("Never", "IfNotPresent")


@pytest.mark.parametrize("name", ["api", "process"])
def test_restrictive_security_context(name):
    deployment = load_manifest(f"{name}_deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 1000
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    # A read-only root needs a writable /tmp.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_the_images_user_is_the_manifests_user():
    for dockerfile in ("api/Dockerfile", "processing/Dockerfile"):
        users = re.findall(r"^USER (\d+)", (ROOT / dockerfile).read_text(), re.M)
        assert users and users[-1] == "10001", dockerfile
    for name in ("api", "process"):
        assert load_manifest(f"{name}_deployment")["spec"]["template"]["spec"]["securityContext"][
            "runAsUser"] == 10001


@pytest.mark.parametrize("name", ["api", "process"])
def test_requests_and_limits(name):
    resources = container(load_manifest(f"{name}_deployment"))["resources"]
    for kind in ("cpu", "memory"):
        request, limit = resources["requests"][kind], resources["limits"][kind]
        assert 0 < quantity(request) <= quantity(limit), (kind, request, limit)


def test_backend_memory_covers_a_model_with_default_tiles():
    # A backend with the default tiles peaks around 1.5 GB per model (docs/deploy.md has the figures).
    limits = container(load_manifest("process_deployment"))["resources"]["limits"]
    assert quantity(limits["memory"]) >= 2 * 2**30


def test_grace_period_covers_the_backends_drain():
    pod = load_manifest("process_deployment")["spec"]["template"]["spec"]
    c = container(load_manifest("process_deployment"))
    grace = float(env_of(c)["WTC_GRACE_PERIOD"]["value"]) if "WTC_GRACE_PERIOD" in env_of(c) \
        else describe("WTC_GRACE_PERIOD").default
    assert grace >= describe("WTC_GRACE_PERIOD").default
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_seconds = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
    assert pod["terminationGracePeriodSeconds"] > grace + pre_stop_seconds


def test_network_policy_lets_only_api_pods_reach_the_backends():
    policy = load_manifest("process_networkpolicy")["spec"]
    backend_labels = load_manifest("process_deployment")["spec"]["template"]["metadata"]["labels"]
    api_labels = load_manifest("api_deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= backend_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    assert set(source) == {"podSelector"}  # no namespace or IP block: API pods only
    assert source["podSelector"]["matchLabels"].items() <= api_labels.items()
    assert not source["podSelector"]["matchLabels"].items() <= backend_labels.items()
    assert rule["ports"] == [{"protocol": "TCP", "port": 32017}]


# --- the environment Kubernetes gives the pods ---------------------------------------------

SERVICE_IPS = {"wtc-api": "10.96.0.50", "wtc-process": "10.96.0.17"}


def service_links() -> dict[str, str]:
    """The variables Kubernetes injects for every Service of the namespace (docker-links style)."""
    env: dict[str, str] = {}
    for key in ("api_service", "process_service"):
        service = load_manifest(key)
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        ip = SERVICE_IPS[service["metadata"]["name"]]
        ports = service["spec"]["ports"]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        env[f"{prefix}_PORT"] = f"tcp://{ip}:{ports[0]['port']}"
        for p in ports:
            port, proto = p["port"], p.get("protocol", "TCP")
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(port)
            base = f"{prefix}_PORT_{port}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{port}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(port)
            env[f"{base}_ADDR"] = ip
    return env


def pod_environment(key: str) -> dict[str, str]:
    """Service variables (unless disabled), then the container's own env, which wins."""
    deployment = load_manifest(key)
    pod = deployment["spec"]["template"]["spec"]
    env = service_links() if pod.get("enableServiceLinks", True) else {}
    limits = container(deployment)["resources"]["limits"]
    for item in container(deployment).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            field = item["valueFrom"]["resourceFieldRef"]
            env[item["name"]] = str(int(-(-quantity(limits[field["resource"].split(".")[1]]) //
                                          quantity(field.get("divisor", "1")))))
    return env


def test_the_service_variables_would_break_the_settings_unguarded():
    # Why the manifests set WTC_API_PORT / WTC_PROCESS_PORT: Kubernetes' own value is tcp://IP:PORT.
    with pytest.raises(ConfigError, match="WTC_(API|PROCESS)_PORT"):
        load_settings(service_links())


def test_the_api_pod_finds_the_backends_through_the_service_variables():
    settings = load_settings(pod_environment("api_deployment"))
    assert settings.backends == [(SERVICE_IPS["wtc-process"], 32017)]
    assert settings.api_port == 5000


def test_the_backend_pods_settings():
    settings = load_settings(pod_environment("process_deployment"))
    assert settings.process_port == 32017
    assert settings.process_host == "0.0.0.0"
    assert settings.threads == 2  # one per CPU of the limit


# --- the GPU variant -------------------------------------------------------------------------


def strategic_merge(base: dict, patch: dict) -> dict:
    """Enough of Kubernetes' strategic merge for the GPU patch: maps merge, named lists merge by name."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = strategic_merge(out[key], value)
        elif isinstance(value, list) and isinstance(out.get(key), list) and all(
                isinstance(v, dict) and "name" in v for v in value + out[key]):
            merged = {item["name"]: item for item in out[key]}
            for item in value:
                merged[item["name"]] = strategic_merge(merged.get(item["name"], {}), item)
            out[key] = list(merged.values())
        else:
            out[key] = copy.deepcopy(value)
    return out


def test_gpu_patch_gives_backends_a_gpu_and_stays_valid():
    patch = yaml.safe_load(GPU_PATCH.read_text())
    merged = strategic_merge(load_manifest("process_deployment"), patch)
    kubernetes_validate.validate(merged, K8S_VERSION, strict=True)
    c = container(merged)
    assert quantity(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert quantity(c["resources"]["limits"]["memory"]) > 0  # the CPU/memory limits survive the merge
    env = {k: v["value"] for k, v in env_of(c).items() if "value" in v}
    assert env["WTC_DEVICE"] == "vulkan"
    assert "vulkan" in describe("WTC_DEVICE").choices
    assert "graphics" in env["NVIDIA_DRIVER_CAPABILITIES"]
    assert load_settings(pod_environment("process_deployment") | env).device == "vulkan"
