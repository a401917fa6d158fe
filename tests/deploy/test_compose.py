"""deploy/: the compose file is valid for docker-compose and sets only real settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from common.settings import Settings, describe
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
SETTINGS = {name for name, _, _ in describe()}
COMPOSE_ENV = {"REDIS_PASSWORD": "test-password-0123456789"}


def compose_config(*files: str) -> dict[str, Any]:
    """`docker-compose config` of the main file (and `files` on top), both profiles."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (scripts/test installs it with apt when run as root)")
    chosen = [a for f in ("docker-compose.yml", *files) for a in ("-f", f)]
    out = subprocess.run(
        [exe, *chosen, "--profile", "gpu", "--profile", "cpu", "config"],
        env={**os.environ, **COMPOSE_ENV},
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    config: dict[str, Any] = yaml.safe_load(out.stdout)
    return config


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_config()


def stt_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if svc.get("image", "").startswith("stt-cluster")}


def test_every_environment_variable_is_a_setting(compose: dict[str, Any]) -> None:
    services = stt_services(compose)
    assert set(services) == {"gateway-1", "gateway-2", "decoder-gpu", "decoder-gpu-2", "decoder-cpu"}
    for name, svc in services.items():
        unknown = set(svc["environment"]) - SETTINGS
        assert not unknown, "%s sets %s, which are not settings" % (name, unknown)
        # Each value must also parse: a typo'd number would stop the container at start.
        Settings.from_env({k: str(v) for k, v in svc["environment"].items()})
        assert svc["command"][0] in ("gateway", "decoder")


def test_cluster_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis = services["redis"]
    script = " ".join(redis["command"])
    assert redis["image"].startswith("redis:7")
    for option in ("requirepass", "--appendonly yes", "--maxmemory-policy noeviction", "--maxmemory"):
        assert option in script
    assert "ports" not in redis, "Redis is reached only inside the compose network"
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"nginx", "prometheus"}
    for svc in stt_services(compose).values():
        assert svc["environment"]["REDIS_URL"].startswith("redis://:%s@redis:6379" % COMPOSE_ENV["REDIS_PASSWORD"])
        if svc["command"][0] == "decoder":
            assert svc["environment"]["METRICS_HOST"] == "0.0.0.0"
    gpus = []
    for name, profile in (("decoder-gpu", "gpu"), ("decoder-gpu-2", "gpu2")):
        svc = services[name]
        assert svc["profiles"] == [profile] and svc["environment"]["DEVICE"] == "cuda"
        [device] = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        gpus += device["device_ids"]
    assert gpus == ["0", "1"], "one GPU each; by default (profile gpu) one decoder on GPU 0"
    assert services["decoder-cpu"]["profiles"] == ["cpu"]
    assert services["decoder-cpu"]["environment"]["DEVICE"] == "cpu"
    assert {"published": 8000, "target": 8000} in services["nginx"]["ports"]
    for gw in ("gateway-1", "gateway-2"):
        assert services[gw]["environment"]["GATEWAY_ID"] == gw  # distinct result channels
    # Works on any host by default; GPUs are asked for (a GPU service on a host without one
    # would fail and be restarted forever).
    assert (DEPLOY / ".env").read_text().count("COMPOSE_PROFILES=cpu") == 1


def test_nginx_and_prometheus_point_at_the_services(compose: dict[str, Any]) -> None:
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade" in nginx and "proxy_http_version 1.1" in nginx
    assert int(re.search(r"proxy_read_timeout (\d+)s", nginx).group(1)) >= 3600  # type: ignore[union-attr]
    upstream = set(re.findall(r"server (gateway-\d+):8000", nginx))
    assert upstream == {"gateway-1", "gateway-2"}
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    names = {c["job_name"]: c["dns_sd_configs"][0] for c in prom["scrape_configs"]}
    aliases = {name: set(svc["networks"]["default"]["aliases"]) for name, svc in stt_services(compose).items()}
    assert all("gateways" in aliases[g] for g in ("gateway-1", "gateway-2"))
    assert all("decoders" in aliases[d] for d in ("decoder-gpu", "decoder-gpu-2", "decoder-cpu"))
    assert names["gateways"]["names"] == ["gateways"] and names["gateways"]["port"] == 8000
    assert names["decoders"]["names"] == ["decoders"] and names["decoders"]["port"] == Settings().METRICS_PORT


def test_dockerfile_installs_the_project_with_stt_as_entry_point() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["stt"]' in text and 'pip install ".[server]"' in text
    for package in ("common", "decoder", "gateway", "client", "stt"):
        assert "COPY %s %s" % (package, package) in text
    assert set(re.findall(r"^FROM \S+ AS (\w+)", text, re.M)) == {"cpu", "gpu"}


def test_the_gpu_image_needs_no_cudnn_and_assumes_no_library_path() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    gpu = text.split("AS gpu", 1)[1]
    assert 'pip install ".[server,gpu]"' in gpu
    assert "cudnn" not in gpu.lower(), "CTranslate2 >= 4.6.3 needs no cuDNN"
    assert "site-packages" not in text and "LD_LIBRARY_PATH" not in text, "the decoder finds the wheels itself"
    pyproject = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'"ctranslate2>=([\d.]+)"', pyproject)
    assert floor is not None
    assert tuple(int(x) for x in floor.group(1).split(".")) >= (4, 6, 3), "a floor that needs no cuDNN"
    assert re.search(r'^gpu = \["nvidia-cublas-cu12', pyproject, re.M)


def test_the_ha_file_puts_redis_behind_three_sentinels_and_every_process_on_them() -> None:
    config = compose_config("docker-compose.ha.yml")
    services = config["services"]
    sentinels = [name for name in services if name.startswith("sentinel-")]
    assert len(sentinels) == 3
    for name in sentinels:
        script = services[name]["command"][0]
        assert "sentinel monitor mymaster redis 6379 2" in script and "--sentinel" in script
    assert "--replicaof redis 6379" in services["redis-replica"]["command"][0]
    for name, svc in stt_services(config).items():
        settings = Settings.from_env({k: str(v) for k, v in svc["environment"].items()})
        url = settings.redis_url
        assert url.startswith("redis+sentinel://") and all(s in url for s in sentinels), (name, url)
