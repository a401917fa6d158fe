"""`stt up` as a real process tree: private Redis, a decoder and a gateway with the real tiny.en,
driven by `stt client`, the seed's quick-start client, a killed decoder and SIGTERM; and `stt up`
with no MODEL_NAME on a machine with no model hub."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.process import descendants as process_tree
from common.redis_server import free_port
from stt.speech import SENTENCES, Speech, conversation
from stt.wer import wer
from tests.conftest import JFK, JFK_TEXT, ROOT, Proc, wait_for
from tests.stt.conftest import STT_UP_ENV


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    return set(process_tree(pid))


def alive(pid: int) -> bool:
    try:
        state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Speech, Path]]:
    speech = conversation(list(SENTENCES[:3]), pause_s=1.2)
    # 44.1 kHz stereo: `stt client` must convert it.
    path = tmp_path_factory.mktemp("audio") / "three.wav"
    pcm = np.frombuffer(speech.pcm16_at(44100), dtype="<i2")
    sf.write(path, np.stack([pcm, pcm], axis=1), 44100, subtype="PCM_16")
    yield speech, path


def stt_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stt", "client", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_stt_client_streams_a_wav_through_stt_up(stt_up: Callable[..., Proc], three: tuple[Speech, Path]) -> None:
    speech, wav = three
    port = free_port()
    up = stt_up(port)
    assert "ws://127.0.0.1:%d/v1/listen" % port in up.output()
    url = "ws://127.0.0.1:%d/v1/listen" % port
    plain = stt_client(str(wav), "--url", url, "--speed", "4")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 3, plain.stdout
    for line, (start, _), text in zip(lines, speech.spans, speech.texts):
        m = re.match(r"\[\s*([\d.]+) - \s*([\d.]+)\] (.*)", line)
        assert m is not None and abs(float(m.group(1)) - start) < 0.4, line
        assert wer(text, m.group(3)) <= 0.5, (text, line)
    as_json = stt_client(str(wav), "--url", url, "--speed", "8", "--json")
    assert as_json.returncode == 0, as_json.stderr
    msgs = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert msgs[0]["type"] == "started" and msgs[-1]["type"] == "done"
    assert [m["utterance"] for m in msgs if m["type"] == "final"] == [0, 1, 2]
    assert [m["seq"] for m in msgs] == list(range(len(msgs)))
    # On a terminal the live interim is redrawn on one line, then each final replaces it.
    main, sub = pty.openpty()
    with os.fdopen(main, "rb", buffering=0) as reader:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stt", "client", str(wav), "--url", url, "--speed", "4"],
            cwd=ROOT,
            stdout=sub,
            stderr=subprocess.PIPE,
        )
        os.close(sub)
        screen = b""
        with contextlib.suppress(OSError):  # EIO once the client has exited and closed the pty
            while chunk := reader.read(4096):
                screen += chunk
        _, errors = proc.communicate(timeout=60)
        assert proc.returncode == 0, errors
    text = screen.decode()
    assert "\r\x1b[K… " in text  # an interim drawn in place
    finals_shown = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    assert [re.sub(r".*\x1b\[K", "", line).startswith("[") for line in finals_shown] == [True] * 3


def test_stt_client_reads_raw_pcm_from_stdin_and_reports_bad_files(
    stt_up: Callable[..., Proc], three: tuple[Speech, Path], tmp_path: Path
) -> None:
    speech, _ = three
    port = free_port()
    stt_up(port)
    url = "ws://127.0.0.1:%d/v1/listen" % port
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stt",
            "client",
            "-",
            "--url",
            url,
            "--rate",
            "16000",
            "--speed",
            "4",
            "--no-interim",
            "--json",
        ],
        input=speech.pcm16,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    msgs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [m["type"] for m in msgs] == ["started", "final", "final", "final", "done"]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    refused = stt_client(str(bad), "--url", url)
    assert refused.returncode == 2 and "cannot read" in refused.stderr
    nobody = stt_client(str(bad.with_name("missing.wav")), "--url", "ws://127.0.0.1:%d/v1/listen" % free_port())
    assert nobody.returncode == 2
    unreachable = stt_client("-", "--url", "ws://127.0.0.1:%d/v1/listen" % free_port())
    assert unreachable.returncode == 69 and "cannot connect" in unreachable.stderr


def test_seed_quick_start_client_runs_as_written(
    stt_up: Callable[..., Proc], three: tuple[Speech, Path], tmp_path: Path
) -> None:
    speech, _ = three
    source = (Path(__file__).parent / "seed_client.py").read_text()
    port = 8000
    if not port_free(port):  # someone else has 8000 here: the only change is the port
        port = free_port()
        source = source.replace("ws://localhost:8000/ws", "ws://localhost:%d/ws" % port)
    stt_up(port)
    sf.write(tmp_path / "sample.wav", np.frombuffer(speech.pcm16, dtype="<i2"), 16000, subtype="PCM_16")
    (tmp_path / "client.py").write_text(source)
    run = subprocess.run([sys.executable, "client.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    msgs = [json.loads(line) for line in run.stdout.splitlines()]
    types = [m["type"] for m in msgs]
    assert types[0] == "started" and types[-1] == "done"
    # It sends ten times faster than real time: a final may well come before any interim.
    assert [m["utterance"] for m in msgs if m["type"] == "final"] == [0, 1, 2]
    assert wer(speech.text, " ".join(m["text"] for m in msgs if m["type"] == "final")) <= 0.3


def test_killed_decoder_is_restarted_and_sigterm_leaves_no_process(
    stt_up: Callable[..., Proc], three: tuple[Speech, Path]
) -> None:
    _, wav = three
    port = free_port()
    up = stt_up(port)
    first = int(re.findall(r"started decoder-0 \(pid (\d+)\)", up.output())[0])
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: len(re.findall(r"started decoder-0 \(pid (\d+)\)", up.output())) == 2, 30, "a restart")
    assert "decoder-0 exited with -9; restarting" in up.output()
    served = stt_client(str(wav), "--url", "ws://127.0.0.1:%d/v1/listen" % port, "--speed", "4")
    assert served.returncode == 0 and len(served.stdout.splitlines()) == 3, served.stderr
    tree = descendants(up.pid)
    assert len(tree) >= 3  # redis-server, decoder, gateway (and their helpers)
    up.signal(signal.SIGTERM)
    assert up.wait(60) == 0, up.output()
    wait_for(lambda: not any(alive(p) for p in tree), 10, "every child to be gone")
    out = up.output()
    assert out.index("gateway stopped") < out.index("decoder-0 stopped") < out.index("stt up: stopped")
    # A graceful stop is a clean exit for every child, and stt up records the real one.
    assert "gateway stopped (exit 0)" in out and "decoder-0 stopped (exit 0)" in out, out[-3000:]
    assert "Traceback" not in out


def test_redis_killed_mid_session_is_restarted_and_the_session_rides_through(
    stt_up: Callable[..., Proc], three: tuple[Speech, Path]
) -> None:
    """kill -9 of stt up's Redis while a client streams: it comes back on the same socket with
    its data (AOF); the gateway's writes wait for it, the decoder and the result subscription
    reconnect, and the client gets all its finals, none lost, none doubled."""
    speech, wav = three
    port = free_port()
    up = stt_up(port)
    [redis_pid] = [p for p in descendants(up.pid) if Path("/proc/%d/comm" % p).read_text().strip() == "redis-server"]
    client = subprocess.Popen(
        [sys.executable, "-m", "stt", "client", str(wav), "--json", "--url", "ws://127.0.0.1:%d/v1/listen" % port],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: "utt 0: final delivered" in up.output(), 60, "the first final")
        os.kill(redis_pid, signal.SIGKILL)
        out, err = client.communicate(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    msgs = [json.loads(line) for line in out.splitlines()]
    finals = [m for m in msgs if m["type"] == "final"]
    assert [m["utterance"] for m in finals] == [0, 1, 2], msgs
    assert [m for m in msgs if m["type"] == "error"] == []
    assert wer(" ".join(speech.texts), " ".join(m["text"] for m in finals)) < 0.25
    assert "redis-server exited with -9; restarting it" in up.output()
    assert "redis-server restarted" in up.output()


def test_stt_up_gives_up_on_a_model_that_cannot_load(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    up = spawn(
        ["up"], {**STT_UP_ENV, "MODEL_NAME": str(tmp_path / "no-such-model"), "PORT": str(free_port())}, name="stt-up"
    )
    assert up.wait(60) == 69, up.output()
    assert (
        "exited with 69 (a model or service it needs is unavailable) before the service was ever ready" in up.output()
    )
    assert "stt up: stopped" in up.output()
    bad = subprocess.run(
        [sys.executable, "-m", "stt", "up"],
        env={**os.environ, "PORT": "eighty"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 78 and "PORT" in bad.stderr


def test_offline_without_model_name_serves_the_bundled_model(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    """What a new user on a machine with no model hub gets from `bash scripts/up`: the default
    `base` cannot be had, so the bundled tiny.en serves, said once by each decoder; it hears the words."""
    port, metrics = free_port(), free_port()
    env: dict[str, str | None] = {
        **STT_UP_ENV,
        "PORT": str(port),
        "METRICS_PORT": str(metrics),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    # Nor does a new user set DECODERS or CPU_THREADS: on a CPU, two decoders of a thread per lane.
    up = spawn(["up"], {**env, "MODEL_NAME": None, "DECODERS": None, "CPU_THREADS": None}, name="stt-up")
    wait_for(lambda: "stt up: ready" in up.output() or up.popen.poll() is not None, 90, "stt up ready")
    out = up.output()
    assert "2 decoder(s) loading model base (the default; the bundled tiny.en if base cannot be had)" in out
    assert out.count("serving the bundled tiny.en instead") == 2, out
    assert "stt up: ready; model tiny.en on cpu:0 (int8)" in out
    wait_for(
        lambda: (
            len(json.loads(urllib.request.urlopen("http://127.0.0.1:%d/status" % port, timeout=5).read())["decoders"])
            == 2
        ),
        30,
        "both decoders live",
    )
    status = json.loads(urllib.request.urlopen("http://127.0.0.1:%d/status" % port, timeout=5).read())
    assert [d["model"] for d in status["decoders"]] == ["tiny.en", "tiny.en"]
    scrape = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics, timeout=5).read().decode()
    assert re.search(r'stt_decoder_info\{[^}]*model="tiny.en"', scrape), scrape
    heard = stt_client(str(JFK), "--url", "ws://127.0.0.1:%d/v1/listen" % port, "--speed", "4")
    assert heard.returncode == 0, heard.stderr
    assert wer(JFK_TEXT, " ".join(line.split("] ", 1)[1] for line in heard.stdout.splitlines())) <= 0.05
