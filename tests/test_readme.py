"""The README stays true: its settings table and metric names come from the code."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from common.settings import markdown_table
from decoder.metrics import DecoderMetrics, QueueCollector
from gateway.metrics import GatewayMetrics
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_lists_every_setting_with_its_default() -> None:
    assert markdown_table() in README, "README's settings table is stale: paste `stt settings --markdown`"


def test_readme_quick_start_is_two_commands() -> None:
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == [
        "bash scripts/up",
        "bash scripts/test",
    ]


def sample_names(registry: CollectorRegistry) -> set[str]:
    return {s.name for family in registry.collect() for s in family.samples} | {
        family.name for family in registry.collect()
    }


def test_readme_metrics_exist(redis_url: str) -> None:
    section = README.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(stt_\w+)", section, re.M))
    gateway, decoder = GatewayMetrics(), DecoderMetrics()
    gateway.interims_dropped.labels("stale").inc()
    gateway.errors.labels("bad_json").inc()
    gateway.limit_refusals.labels("acme", "max_streams").inc()
    gateway.tenant_audio_seconds.labels("acme").inc()
    queues = CollectorRegistry()
    queues.register(QueueCollector(redis_url))
    real = sample_names(gateway.registry) | sample_names(decoder.registry) | sample_names(queues)
    assert documented and documented <= real, documented - real
