"""deploy/k8s/: each kustomization renders with `kubectl kustomize` (no cluster), every object
validates against the Kubernetes schemas (kubernetes-validate, offline), and the KEDA objects,
which those schemas do not cover, hold what KEDA reads and agree with the service."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from common import keys
from common.settings import Settings
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "overlays/cpu"]
KUBERNETES_VERSION = "1.32.0"
# What KEDA's redis-sentinel-streams scaler reads (keda.sh/docs/latest/scalers/redis-sentinel-streams).
KEDA_SENTINEL_STREAMS = {
    "addresses",
    "hosts",
    "ports",
    "sentinelMaster",
    "sentinelMasterFromEnv",
    "stream",
    "consumerGroup",
    "pendingEntriesCount",
    "streamLength",
    "lagCount",
    "activationLagCount",
    "databaseIndex",
    "enableTLS",
    "usernameFromEnv",
    "passwordFromEnv",
    "sentinelUsernameFromEnv",
    "sentinelPasswordFromEnv",
}
KEDA_AUTH_PARAMETERS = {"username", "password", "sentinelUsername", "sentinelPassword", "tls", "ca", "cert", "key"}


def render(kustomization: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("needs kubectl (kubectl kustomize renders with no cluster)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / kustomization)], capture_output=True, text=True, timeout=60, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_renders_and_validates(kustomization: str) -> None:
    import kubernetes_validate

    objects = render(kustomization)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "Secret"} <= kinds
    assert {"ScaledObject", "TriggerAuthentication"} <= kinds
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked field by field below
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError("%s/%s: %s" % (obj["kind"], obj["metadata"]["name"], exc.message)) from None


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_keda_scales_the_decoders_on_the_lag_of_the_job_streams(kustomization: str) -> None:
    objects = render(kustomization)
    scaled = one(objects, "ScaledObject", "stt-decoder")["spec"]
    decoder = one(objects, "Deployment", scaled["scaleTargetRef"]["name"])
    assert decoder["spec"]["template"]["spec"]["containers"][0]["args"] == ["decoder"]
    assert scaled["minReplicaCount"] >= 1, "a model load takes tens of seconds: never scale to zero"
    assert scaled["maxReplicaCount"] >= scaled["minReplicaCount"]
    streams = set()
    secret = one(objects, "Secret", "stt-secrets")
    for trigger in scaled["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-sentinel-streams"
        assert set(meta) <= KEDA_SENTINEL_STREAMS, set(meta) - KEDA_SENTINEL_STREAMS
        assert meta["consumerGroup"] == keys.GROUP
        assert int(meta["lagCount"]) >= 1, "lag mode: a positive lagCount"
        assert "pendingEntriesCount" not in meta and "streamLength" not in meta
        assert all(isinstance(v, str) for v in meta.values()), "KEDA's metadata values are strings"
        streams.add(meta["stream"])
        auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
        for ref in auth["secretTargetRef"]:
            assert ref["parameter"] in KEDA_AUTH_PARAMETERS
            assert ref["name"] == "stt-secrets" and ref["key"] in secret["stringData"]
    assert streams == {keys.STREAM_FINAL, keys.STREAM_INTERIM, keys.STREAM_BATCH}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_are_probed_drained_budgeted_and_configured_with_valid_settings(kustomization: str) -> None:
    from gateway.transport.app import create_app

    objects = render(kustomization)
    maps = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("stt-")]
    config = {k: v for o in maps for k, v in o["data"].items()}
    secret = one(objects, "Secret", "stt-secrets")["stringData"]
    Settings.from_env({**config, **secret})  # every name known, every value valid
    routes = {getattr(r, "path", None) for r in create_app(Settings.from_env({})).routes}
    assert {"/ready", "/health"} <= routes
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for name in ("stt-gateway", "stt-decoder"):
        deployment = one(objects, "Deployment", name)
        pod = deployment["spec"]["template"]
        [container] = pod["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert "preStop" in container["lifecycle"]
        assert pod["spec"]["terminationGracePeriodSeconds"] > float(config["SHUTDOWN_TIMEOUT_S"])
        assert {"secretRef": {"name": "stt-secrets"}} in container["envFrom"]
        labels = pod["metadata"]["labels"]
        assert any(all(labels.get(k) == v for k, v in b["spec"]["selector"]["matchLabels"].items()) for b in budgets), (
            "%s has a PodDisruptionBudget" % name
        )
    hpa = one(objects, "HorizontalPodAutoscaler", "stt-gateway")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "stt-gateway" and hpa["minReplicas"] >= 2
    ingress = one(objects, "Ingress", "stt")
    assert int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = one(objects, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_gpu_decoders_ask_for_one_gpu_and_cpu_ones_for_none() -> None:
    gpu = one(render("base"), "Deployment", "stt-decoder")["spec"]["template"]["spec"]["containers"][0]
    cpu = one(render("overlays/cpu"), "Deployment", "stt-decoder")["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert gpu["image"].startswith("stt-cluster-gpu:") and cpu["image"].startswith("stt-cluster:")
