"""`stt bench` end to end: it starts `stt up` itself, sweeps N, and writes JSON and a PNG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from common.redis_server import free_port
from tests.conftest import REAL_MODEL, ROOT, Proc


def test_short_sweep_reports_no_missing_finals(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MODEL_NAME": REAL_MODEL,
        "DEVICE": "cpu",
        "COMPUTE_TYPE": "int8",
        "CPU_THREADS": "1",
        "METRICS_PORT": "0",
        "DECODE_BATCH": "4",
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "stt",
            "bench",
            "--streams",
            "1,2",
            "--speed",
            "3",
            "--sentences",
            "2",
            "--slo-ms",
            "30000",
            "--label",
            "test",
            "--out",
            str(tmp_path),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "capacity at SLO" in run.stdout and "N=2" in run.stdout  # progress and the table
    report = json.loads((tmp_path / "bench-test.json").read_text())
    assert [r["streams"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert r["finals_expected"] == 2 * r["streams"]
        assert r["finals_missing"] == r["finals_duplicated"] == r["finals_out_of_order"] == 0
        assert r["sessions_failed"] == 0
        assert 0 < r["e2e_final_ms"]["p50"] <= r["e2e_final_ms"]["p95"]
        assert r["first_interim_ms"]["p50"] is not None
        assert r["wer"] <= 30.0  # two sentences the real tiny.en hears well
    assert report["capacity_at_slo"] == 2
    assert report["floor"]["decode_ms"]["p50"] > 0
    assert report["floor"]["model"] == "tiny.en" and report["floor"]["wer_direct"] <= 30.0
    assert (tmp_path / "bench-test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_bench_speaks_every_protocol(stt_up: Callable[..., Proc], tmp_path: Path) -> None:
    """The same load through the OpenAI Realtime and Deepgram adapters, and native sessions whose
    turns the end-of-turn model ends, against one `stt up`."""
    port = free_port()
    stt_up(port)
    for protocol, extra in (("openai", []), ("deepgram", []), ("native", ["--end-of-turn", "model"])):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "stt",
                "bench",
                "--url",
                "ws://127.0.0.1:%d/v1/listen" % port,
                "--protocol",
                protocol,
                "--streams",
                "1,2",
                "--speed",
                "3",
                "--sentences",
                "2",
                "--slo-ms",
                "30000",
                "--no-floor",
                "--label",
                protocol,
                "--out",
                str(tmp_path),
                *extra,
            ],
            env={**os.environ, "MODEL_NAME": REAL_MODEL},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads((tmp_path / ("bench-%s.json" % protocol)).read_text())
        assert report["protocol"] == protocol
        assert report["end_of_turn"] == ("model" if extra else "silence")
        for r in report["results"]:
            assert r["finals_missing"] == r["finals_duplicated"] == r["finals_out_of_order"] == 0, (protocol, r)
            assert r["sessions_failed"] == 0 and r["wer"] <= 30.0
            assert r["first_interim_ms"]["p50"] is not None
