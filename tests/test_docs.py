"""The docs stay true and whole: the site builds strict; every setting, metric, close code and exit
code is named in it; no page names a path outside the repository, nor one of the repository that
is not there; the README stays short and keeps its two quick-start commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common import protocol
from common.errors import ExitCode
from common.settings import SECTIONS, own_fields
from decoder.metrics import DecoderMetrics, queue_families
from gateway.metrics import GatewayMetrics
from stt.docsgen import fill
from tests.conftest import ROOT

DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
# Paths the repository makes when it runs, not files it holds.
MADE = ("benchmarks/results/", "test-artifacts/", "site/", ".venv/", "gpu-kit")
TOP = ("common", "gateway", "decoder", "client", "stt", "deploy", "tests", "benchmarks", "scripts", "docs", "examples")


def pages() -> dict[Path, str]:
    """Every page as the site shows it (generated tables filled in), and the README."""
    out = {p: fill(p.read_text()) for p in sorted(DOCS.rglob("*.md"))}
    out[ROOT / "README.md"] = README
    return out


def all_text() -> str:
    return "\n".join(pages().values())


@pytest.mark.timeout(300)
def test_the_site_builds_strict(tmp_path: Path) -> None:
    """A broken link or anchor, a page missing from the navigation, any warning: the build fails."""
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    settings_page = (tmp_path / "site" / "settings" / "index.html").read_text()
    assert "FINAL_SILENCE_MS_MIN" in settings_page and "<!-- generated" not in settings_page


def test_every_setting_is_documented_with_its_default() -> None:
    text = all_text()
    for _, cls in SECTIONS:
        for f in own_fields(cls):
            default = "`%s`" % f.default if str(f.default) else "(empty)"
            assert "| `%s` | %s |" % (f.name, default) in text, f.name


def metric_names() -> set[str]:
    gateway, decoder = GatewayMetrics(), DecoderMetrics()
    names = set()
    for registry in (gateway.registry, decoder.registry):
        for family in registry.collect():
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    names |= {family.name for family in queue_families()}
    return names


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    text = all_text()
    real = metric_names()
    missing = sorted(n for n in real if "`%s" % n not in text)
    assert not missing, missing
    metrics_page = (DOCS / "operations" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(stt_\w+)", metrics_page, re.M))
    assert documented and documented <= real, documented - real


def test_every_close_code_and_exit_code_is_documented() -> None:
    codes = (DOCS / "reference.md").read_text()
    closes = {v for k, v in vars(protocol).items() if k.startswith("CLOSE_")}
    for code in sorted(closes):
        assert re.search(r"^\| %d \|" % code, codes, re.M), code
    for exit_code in ExitCode:
        assert re.search(r"^\| %d \|" % exit_code.value, codes, re.M), exit_code


def test_no_page_names_a_path_outside_the_repository_or_one_that_is_not_there() -> None:
    for page, text in pages().items():
        where = page.relative_to(ROOT)
        assert not re.search(r"\.\./shared|DESIGN\.md|/work/", text), where
        # Relative links: inside the repository, and there.
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), (where, target)
            assert resolved.exists(), (where, target)
        # Paths of the repository named in code spans: there (or made by a run).
        for span in re.findall(r"`([^`\s]+)`", text):
            path = span.split("::")[0].rstrip(".,:;)")
            if "/" not in path or path.split("/")[0] not in TOP or any(c in path for c in "{}*<>|$…"):
                continue
            if path.startswith(MADE):
                continue
            assert (ROOT / path).exists(), (where, span)


def test_readme_is_short_and_its_quick_start_is_two_commands() -> None:
    assert len(README.splitlines()) <= 160
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == [
        "bash scripts/up",
        "bash scripts/test",
    ]


def test_every_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.rglob("*.md"):
        assert str(page.relative_to(DOCS)) in nav, page
