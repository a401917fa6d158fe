"""How `stt up` sizes its decoders (pure logic; the process tree itself is tests/stt/test_up.py,
device choice is tests/decoder/test_devices.py)."""

from __future__ import annotations

import pytest

from common.settings import Settings
from decoder.devices import CPU_DECODERS, Placement
from stt import supervisor
from stt.supervisor import decoder_env, decoder_plan


def settings(**env: str) -> Settings:
    return Settings.from_env({"DEVICE": "cpu", "DECODER_ID": "dec", **env})


def test_a_cpu_gets_two_decoders_with_a_thread_per_lane_per_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(decoder_plan(settings(), gpus=0)) == CPU_DECODERS == 2
    assert len(decoder_plan(settings(DECODERS="3"), gpus=0)) == 3
    plan = decoder_plan(settings(), gpus=0)
    for cores, threads in ((1, "1"), (2, "1"), (4, "1"), (8, "2"), (64, "4")):
        monkeypatch.setattr(supervisor, "usable_cores", lambda cores=cores: cores)
        env = decoder_env(settings(), 1, plan)
        assert env["CPU_THREADS"] == threads, cores
        assert env["DECODER_ID"] == "dec-1" and env["DEVICE_INDEX"] == "0" and env["DEVICE"] == "cpu"


def test_cpu_threads_given_and_gpus_are_left_alone() -> None:
    assert "CPU_THREADS" not in decoder_env(settings(CPU_THREADS="3"), 0, decoder_plan(settings(), gpus=0))
    cuda = Settings.from_env({"DEVICE": "cuda", "DECODER_ID": "dec", "DECODERS": "2"})
    plan = decoder_plan(cuda, gpus=1)
    assert plan == [Placement("cuda", 0), Placement("cuda", 0)]
    env = decoder_env(cuda, 1, plan)
    assert env["DEVICE_INDEX"] == "0" and env["DEVICE"] == "cuda" and "CPU_THREADS" not in env
    auto = Settings.from_env({"DEVICE": "auto", "DECODER_ID": "dec"})
    assert decoder_env(auto, 1, decoder_plan(auto, gpus=2)) | {"DECODER_ID": ""} == {
        "DEVICE": "auto",
        "DEVICE_INDEX": "1",
        "DECODER_ID": "",
        "METRICS_PORT": "9101",
    }


def test_stt_up_refuses_cuda_without_a_gpu() -> None:
    # This machine has no GPU.
    assert (
        supervisor.Supervisor(Settings.from_env({"DEVICE": "cuda", "REDIS_URL": "redis://127.0.0.1:1/0"})).run() == 69
    )


def test_a_decoder_whose_model_does_not_fit_on_its_gpu_is_not_restarted_and_the_rest_serve(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys

    from common.errors import ExitCode
    from tests.conftest import wait_for

    monkeypatch.setattr(supervisor, "gateway_status", lambda host, port, key="": None)
    started: list[str] = []
    monkeypatch.setattr(supervisor.Child, "start", lambda self: started.append(self.name))
    sup = supervisor.Supervisor(settings())

    def child(name: str, code: int | None) -> supervisor.Child:
        c = supervisor.Child(name, [], {})
        script = "import time; time.sleep(60)" if code is None else "raise SystemExit(%d)" % code
        c.proc = subprocess.Popen([sys.executable, "-c", script])
        return c

    sup.children = [child("decoder-0", ExitCode.NO_DEVICE_MEMORY), child("decoder-1", None), child("decoder-2", 70)]
    try:
        procs = [c.proc for c in sup.children if c.name != "decoder-1" and c.proc is not None]
        wait_for(lambda: all(p.poll() is not None for p in procs), 10, "exits")
        for _ in range(3):
            sup._watch()
        assert sup.no_room == [sup.children[0]] and sup.exit_code is ExitCode.OK
        assert "decoder-0" not in started  # not restarted; decoder-2 (a crash) is, after its backoff
        assert "decoder-0 does not fit in its GPU's memory and is not restarted: 2 of 3 decoders fit" in (
            capsys.readouterr().err
        )
        sup.children = sup.children[:2]
        sup.children[1].proc.kill()  # type: ignore[union-attr]
        sup.children[1].proc.wait()  # type: ignore[union-attr]
        sup.children[1].proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(71)"])
        wait_for(lambda: sup.children[1].proc.poll() is not None, 10, "the second exit")  # type: ignore[union-attr]
        sup._watch()
        assert int(sup.exit_code) == 71  # none fits: the service cannot serve (NO_DEVICE_MEMORY)
        assert "none can serve" in capsys.readouterr().err
    finally:
        for c in sup.children:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.kill()


def test_a_gpu_gets_as_many_decoders_as_its_memory_holds_for_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from decoder.memory import decoder_bytes, decoders_per_gpu

    # The table in docs/operations/gpus.md: 5.77 GB of weights, 12.03 GB a lane.
    weights, cache = decoder_bytes("large-v3", 8)
    assert round(weights / 2**30, 2) == 5.77 and round(cache / 2**30, 2) == 12.03
    assert decoder_bytes("/models/faster-whisper-large-v3", 8) == (weights, cache)
    assert decoder_bytes("large-v3", 8, compute_type="int8_float16")[0] == weights / 2
    assert decoders_per_gpu("large-v3", "float16", 8, 5, 143_771) == 3  # an H200
    assert decoders_per_gpu("large-v3", "float16", 4, 5, 81_920) == 3  # an 80 GB A100 at batch 4
    assert decoders_per_gpu("large-v3", "float16", 8, 5, 24_576) == 1  # does not fit: said at load
    assert decoders_per_gpu("small", "float16", 4, 5, 24_576) == 4  # the cap
    assert decoders_per_gpu("tiny", "float16", 4, 5, None) == 1
    monkeypatch.setattr(supervisor, "gpu_memory_mb", lambda: [81_920, 143_771])
    cuda = Settings.from_env({"DEVICE": "cuda", "DECODER_ID": "dec", "MODEL_NAME": "large-v3", "DECODE_BATCH": "8"})
    assert decoder_plan(cuda, gpus=2) == [Placement("cuda", i % 2) for i in range(4)]  # the smaller card decides
    given = cuda.replace(DECODERS=3)
    assert len(decoder_plan(given, gpus=2)) == 3  # DECODERS wins


def test_a_gateway_behind_a_key_is_seen_ready_with_the_key_or_without_it() -> None:
    import http.server
    import json
    import threading

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            keyed = self.headers.get("Authorization") == "Bearer k1"
            status = 200 if self.path == "/ready" or keyed else 401
            body = json.dumps({"decoders": [{"model": "tiny.en"}]} if keyed else {}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert supervisor.gateway_status("127.0.0.1", port, "k1") == {"decoders": [{"model": "tiny.en"}]}
        unknown = supervisor.gateway_status("127.0.0.1", port)  # API_KEYS_FILE only: no key to send
        assert unknown is not None and "needs an API key" in unknown["decoders"][0]["model"]
    finally:
        server.shutdown()
        server.server_close()
