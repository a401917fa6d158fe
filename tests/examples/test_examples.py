"""examples/: each voice-agent framework's script, in an environment of its own with the framework
installed from its pinned requirements, streams two sentences through its plugins into `stt up`
and hears them (slow; skipped, saying why, where the framework does not install)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf

from common.redis_server import free_port
from stt.speech import SENTENCES, conversation
from stt.wer import wer
from tests.conftest import ROOT, Proc

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stt-cluster" / "examples"
FRAMEWORKS = {
    "livekit": ("livekit_stt.py", ("flux", "live", "openai")),
    "pipecat": ("pipecat_stt.py", ("live", "flux", "openai")),
}


def framework_python(name: str) -> Path:
    """A virtualenv with the framework's pinned requirements (kept between runs, per their text)."""
    requirements = ROOT / "examples" / ("requirements-%s.txt" % name)
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    venv = CACHE / ("%s-%s" % (name, digest))
    python = venv / "bin" / "python"
    if (venv / "installed").is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    print("installing %s into %s ..." % (requirements.name, venv), flush=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0:
        pytest.skip("%s does not install here: %s" % (name, install.stderr.strip().splitlines()[-1:]))
    (venv / "installed").write_text(requirements.read_text())
    return python


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_a_framework_hears_the_words_through_each_plugin(
    name: str, stt_up: Callable[..., Proc], tmp_path: Path
) -> None:
    python = framework_python(name)
    speech = conversation([SENTENCES[0], SENTENCES[1]], tail_s=1.0)
    wav = tmp_path / "two.wav"
    sf.write(wav, speech.audio, 16000, subtype="PCM_16")
    port = free_port()
    stt_up(port)
    script, plugins = FRAMEWORKS[name]
    run = subprocess.run(
        [str(python), str(ROOT / "examples" / script), "--url", "http://127.0.0.1:%d" % port, str(wav)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [[*line.split(" ", 2), ""] for line in run.stdout.splitlines()]
    for plugin in plugins:
        finals = [text for who, event, text, *_ in lines if who == plugin and event == "final"]
        interims = [text for who, event, text, *_ in lines if who == plugin and event == "interim"]
        assert interims, (plugin, run.stdout[-2000:])
        assert wer(speech.text, " ".join(finals)) <= 0.3, (plugin, finals)
