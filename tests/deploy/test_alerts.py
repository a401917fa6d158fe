"""deploy/alerts.yml: valid rules (promtool check rules), each alert fires when it should and
not otherwise (promtool test rules deploy/alerts.test.yml), on metrics the service exports."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from decoder.metrics import DecoderMetrics, QueueCollector
from gateway.metrics import GatewayMetrics
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def promtool(*args: str) -> str:
    if shutil.which("promtool") is None:
        pytest.skip("needs promtool (Debian's prometheus package)")
    out = subprocess.run(["promtool", *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_the_rules_are_valid_and_prometheus_loads_them() -> None:
    assert "SUCCESS: 8 rules found" in promtool("check", "rules", "alerts.yml")
    assert "alerts.yml" in promtool("check", "config", "prometheus.yml")


def test_each_alert_fires_when_it_should_and_only_then() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((DEPLOY / "alerts.test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == {r["alert"] for r in rules}, "every alert has a case where it fires"


def test_every_metric_an_alert_reads_is_exported() -> None:
    exported = set()
    collector = QueueCollector("redis://127.0.0.1:1/0")  # nothing answers: the families still come
    for registry_families in (
        GatewayMetrics().registry.collect(),
        DecoderMetrics().registry.collect(),
        collector.collect(),
    ):
        for family in registry_families:
            exported.add(family.name)
            exported.update(s.name for s in family.samples)
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
    used = {m for r in rules for m in re.findall(r"\bstt_[a-z_]+", r["expr"])}
    assert used and used <= exported, used - exported
