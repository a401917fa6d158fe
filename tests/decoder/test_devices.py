"""The GPU path without a GPU: CTranslate2's device queries and the model factory are fakes, and
every branch of device choice, compute types, lane building, warm-up and CUDA fallback runs."""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.errors import ExitCode, ModelLoadError
from common.messages import JobKind
from common.settings import Settings
from decoder import cuda_libs, devices
from decoder import main as decoder_main
from decoder.batching import BatchingModel, Features
from decoder.devices import DeviceError, Placement, compute_type, device_of, placements
from decoder.engine import Engine

# What get_supported_compute_types reports, per device (CTranslate2's rules: int8 needs compute
# capability 6.1 or 7.0+, float16 tensor cores 7.0+, bfloat16 8.0+).
PASCAL_P100 = {"float32"}  # sm 6.0
PASCAL = {"float32", "int8", "int8_float32"}  # sm 6.1: GTX 10x0, P40
VOLTA = {"float32", "float16", "int8", "int8_float32", "int8_float16"}  # sm 7.0
AMPERE = VOLTA | {"bfloat16", "int8_bfloat16"}  # sm 8.0+
CPU = {"float32", "int8", "int8_float32", "int16"}


def settings(**env: str) -> Settings:
    return Settings.from_env({"DECODER_ID": "dec", **env})


@pytest.mark.parametrize(
    ("env", "gpus", "want"),
    [
        ({"DEVICE": "cpu"}, 2, [("cpu", 0)] * 2),
        ({"DEVICE": "cpu", "DECODERS": "3"}, 0, [("cpu", 0)] * 3),
        ({"DEVICE": "auto"}, 0, [("cpu", 0)] * 2),
        ({"DEVICE": "auto"}, 1, [("cuda", 0)]),
        ({"DEVICE": "auto"}, 2, [("cuda", 0), ("cuda", 1)]),
        ({"DEVICE": "cuda", "DECODERS": "2"}, 1, [("cuda", 0), ("cuda", 0)]),  # two share the one GPU
        ({"DEVICE": "cuda", "DECODERS": "3"}, 2, [("cuda", 0), ("cuda", 1), ("cuda", 0)]),
        ({"DEVICE": "cuda", "DECODERS": "1"}, 2, [("cuda", 0)]),
        ({"DEVICE": "cuda", "DEVICE_INDEX": "1"}, 2, [("cuda", 1)]),  # a set index is respected
        ({"DEVICE": "cuda", "DEVICE_INDEX": "1", "DECODERS": "2"}, 2, [("cuda", 1), ("cuda", 1)]),
    ],
)
def test_decoders_and_their_gpus(env: dict[str, str], gpus: int, want: list[tuple[str, int]]) -> None:
    assert placements(settings(**env), gpus) == [Placement(d, i) for d, i in want]


@pytest.mark.parametrize(
    ("env", "gpus", "words"),
    [
        ({"DEVICE": "cuda"}, 0, "no CUDA device is visible"),
        ({"DEVICE": "cuda", "DEVICE_INDEX": "2"}, 2, "DEVICE_INDEX=2 but 2 CUDA devices are visible"),
        ({"DEVICE": "cuda", "DEVICE_INDEX": "1"}, 1, "indices 0-0"),
    ],
)
def test_a_gpu_that_is_not_there_is_refused(env: dict[str, str], gpus: int, words: str) -> None:
    with pytest.raises(DeviceError, match=words):
        placements(settings(**env), gpus)
    with pytest.raises(DeviceError, match=words):
        device_of(settings(**env), gpus)


def test_cuda_visible_devices_is_named_in_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(DeviceError, match="CUDA_VISIBLE_DEVICES=''"):
        device_of(settings(DEVICE="cuda"), 0)


@pytest.mark.parametrize(
    ("asked", "supported", "device", "want"),
    [
        ("float16", AMPERE, "cuda", "float16"),
        ("float16", PASCAL, "cuda", "int8_float32"),  # not float32: int8 is faster there
        ("float16", PASCAL_P100, "cuda", "float32"),
        ("int8_float16", PASCAL, "cuda", "int8_float32"),
        ("int8_float16", VOLTA, "cuda", "int8_float16"),
        ("bfloat16", VOLTA, "cuda", "float16"),  # Volta has no bfloat16
        ("int8_bfloat16", VOLTA, "cuda", "int8_float16"),
        ("bfloat16", AMPERE, "cuda", "bfloat16"),
        ("int8", PASCAL_P100, "cuda", "float32"),
        ("float16", CPU, "cpu", "int8"),  # measured fastest on a CPU
        ("int8_float16", CPU, "cpu", "int8"),
        ("int8", CPU, "cpu", "int8"),
        ("default", PASCAL, "cuda", "default"),
        ("auto", CPU, "cpu", "auto"),
    ],
)
def test_compute_types_fall_back_to_the_fastest_the_device_has(
    asked: str, supported: set[str], device: str, want: str
) -> None:
    assert compute_type(asked, device, supported) == want


def test_resolve_asks_the_device_that_will_be_used() -> None:
    asked: list[tuple[str, int]] = []

    def supported(device: str, index: int) -> set[str]:
        asked.append((device, index))
        return PASCAL

    place, compute = devices.resolve(
        settings(DEVICE="auto", DEVICE_INDEX="1", COMPUTE_TYPE="int8_float16"), lambda: 2, supported
    )
    assert place == Placement("cuda", 1) and compute == "int8_float32" and asked == [("cuda", 1)]


class FakeCT2:
    is_multilingual = False

    def __init__(self, made: dict[str, Any]) -> None:
        self.made = made


class Factory:
    """Stands in for faster_whisper.WhisperModel: records every model made; its warm-up decode
    fails with `fail` on the devices listed."""

    def __init__(self, fail: str = "", on: tuple[str, ...] = ("cuda",)) -> None:
        self.made: list[dict[str, Any]] = []
        self.fail, self.on = fail, on

    def __call__(self, path: str, **kwargs: Any) -> Any:
        self.made.append(kwargs)
        factory = self

        class Whisper:
            model = FakeCT2(kwargs)
            hf_tokenizer = type("T", (), {"token_to_id": staticmethod(lambda token: 50258)})()

            def transcribe(self, audio: Any, **options: Any) -> tuple[list[Any], None]:
                if factory.fail and kwargs["device"] in factory.on:
                    raise RuntimeError(factory.fail)
                return [], None

        return Whisper()


def gpu_engine(env: dict[str, str], supported: set[str] = AMPERE, gpus: int = 1) -> Engine:
    s = settings(MODEL_NAME="tiny.en", **env)
    return Engine(
        s, resolve=lambda st: devices.resolve(st, lambda: gpus, lambda d, i: supported if d == "cuda" else CPU)
    )


def test_a_gpu_engine_builds_a_model_per_lane_with_one_worker_each() -> None:
    engine = gpu_engine({"DEVICE": "cuda", "DEVICE_INDEX": "1", "COMPUTE_TYPE": "float16"}, gpus=2)
    factory = Factory()
    engine.load(factory=factory)
    assert [(m["device"], m["device_index"], m["compute_type"], m["num_workers"]) for m in factory.made] == [
        ("cuda", 1, "float16", 1),
        ("cuda", 1, "float16", 1),
    ]
    final, background = engine.lane(JobKind.FINAL), engine.lane(JobKind.INTERIM)
    assert final.batcher._model is not background.batcher._model, "finals never wait for the background's worker"
    assert final.batcher.pad and background.batcher.pad, "on a GPU, windows pad to one group"
    assert engine.device == "cuda" and engine.device_index == 1


def test_a_cpu_engine_keeps_its_measured_lanes() -> None:
    engine = gpu_engine({"DEVICE": "cpu", "BACKGROUND_NICE": "0"})
    factory = Factory()
    engine.load(factory=factory)
    assert [(m["device"], m["num_workers"]) for m in factory.made] == [("cpu", 2)]
    assert not engine.lane(JobKind.FINAL).batcher.pad


def test_a_missing_cublas_is_a_load_error_with_its_fix() -> None:
    engine = gpu_engine({"DEVICE": "cuda"})
    with pytest.raises(ModelLoadError) as err:
        engine.load(factory=Factory("Library libcublas.so.12 is not found or cannot be loaded"))
    message = str(err.value)
    assert "libcublas.so.12" in message and "pip install -e '.[gpu]'" in message and "DEVICE=cpu" in message
    assert "\n" not in message


def test_with_device_auto_an_unusable_gpu_gives_way_to_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    engine = gpu_engine({"DEVICE": "auto", "COMPUTE_TYPE": "float16"})
    factory = Factory("CUDA failed with error CUDA driver version is insufficient")
    with caplog.at_level(logging.WARNING, logger="decoder.engine"):
        engine.load(factory=factory)
    assert engine.device == "cpu" and engine.compute_type == "int8"
    assert [m["device"] for m in factory.made] == ["cuda", "cuda", "cpu", "cpu"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "serving on the CPU instead" in warnings[0].getMessage()


def test_a_decoder_that_cannot_have_its_device_exits_69(monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine has no GPU: DEVICE=cuda is refused before anything loads.
    s = Settings.from_env({}, MODEL_NAME="tiny.en", DEVICE="cuda", LOG_LEVEL="ERROR")
    assert decoder_main.run(s) == ExitCode.UNAVAILABLE

    def broken(settings: Settings) -> Engine:
        raise RuntimeError("CUDA failed with error initialization error")

    monkeypatch.setattr(decoder_main, "Engine", broken)
    assert decoder_main.run(Settings.from_env({}, MODEL_NAME="tiny.en", DEVICE="cpu", LOG_LEVEL="ERROR")) == 69


class RecordingModel:
    """A CTranslate2 Whisper stand-in: records the shapes each generate call was given."""

    def __init__(self) -> None:
        self.generated: list[tuple[int, ...]] = []
        self.encoded: list[tuple[int, ...]] = []

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        import ctranslate2

        mel = np.asarray(features)
        self.encoded.append(mel.shape)
        return ctranslate2.StorageView.from_array(np.zeros((mel.shape[0], mel.shape[-1] // 2, 8), np.float32))

    def generate(self, features: Any, prompts: list[list[int]], **kwargs: Any) -> list[str]:
        self.generated.append(tuple(np.asarray(features).shape))
        return ["r%d" % i for i in range(len(prompts))]

    def align(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        return tuple(np.asarray(features).shape)


def run_round(batcher: BatchingModel, windows: list[int], words: list[bool]) -> list[Any]:
    """One thread per job, as the engine runs a batch: each encodes with its own window, then
    generates, then (with words) aligns."""
    import threading

    batcher.begin(len(windows))
    out: list[Any] = [None] * len(windows)

    def job(i: int) -> None:
        batcher.window(windows[i], words[i])
        features = batcher.encode(np.zeros((1, 80, 3000), np.float32))
        assert isinstance(features, Features)
        result = batcher.generate(features, [[50258, 1]])
        aligned = batcher.align(features, [50258], [[1]], 10) if words[i] else None
        batcher.leave()
        out[i] = (result, aligned)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(windows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_on_a_gpu_jobs_of_different_windows_are_one_batched_call() -> None:
    model = RecordingModel()
    run_round(BatchingModel(model, 50258, pad=True), [400, 800, 1200], [False] * 3)
    assert model.generated == [(3, 80, 1200)], "one call, padded to the longest window"
    model = RecordingModel()
    run_round(BatchingModel(model, 50258, pad=False), [400, 800, 1200], [False] * 3)
    assert sorted(model.generated) == [(1, 80, 400), (1, 80, 800), (1, 80, 1200)], "on a CPU: a call per window"


def test_word_alignment_reuses_the_batchs_encoder_output() -> None:
    model = RecordingModel()
    out = run_round(BatchingModel(model, 50258, pad=True), [400, 800], [True, False])
    assert model.encoded == [(2, 80, 800)], "the group encoded once, for generate and align both"
    assert model.generated == [(2, 400, 8)], "generate took the encoder output"
    assert out[0][1] == (1, 400, 8), "align got its job's share of it, not a second encode"


def test_cuda_wheels_are_preloaded_from_where_python_finds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "nvidia" / "cublas" / "lib"
    lib.mkdir(parents=True)
    for name in ("libcublas.so.12", "libcublasLt.so.12"):
        (lib / name).write_bytes(b"")
    loaded: list[tuple[str, int]] = []
    monkeypatch.setattr(ctypes, "CDLL", lambda path, mode=0: loaded.append((path, mode)))
    assert cuda_libs.preload([lib]) == [str(lib / "libcublasLt.so.12"), str(lib / "libcublas.so.12")]
    assert all(mode == ctypes.RTLD_GLOBAL for _, mode in loaded)
    (tmp_path / "nvidia" / "__init__.py").write_text("")
    (tmp_path / "nvidia" / "cublas" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert lib in cuda_libs.wheel_lib_dirs()
    assert cuda_libs.preload([tmp_path / "nowhere"]) == []


@pytest.mark.parametrize(
    ("error", "says", "not_says"),
    [
        ("CUDA failed with error out of memory", "not enough free memory", "cuBLAS"),
        ("Library libcublas.so.12 is not found or cannot be loaded", "CUDA 13's libraries only", "driver"),
        (
            "CUDA failed with error the provided PTX was compiled with an unsupported toolchain",
            "driver is older",
            "cuBLAS",
        ),
        (
            "CUDA failed with error no kernel image is available for execution on the device",
            "compute capability",
            "cuBLAS",
        ),
        ("CUDA failed with error unknown error", "nvidia-smi", "cuBLAS"),
    ],
)
def test_a_cuda_load_failure_names_its_own_cause(error: str, says: str, not_says: str) -> None:
    from decoder.lanes import describe

    line = describe(RuntimeError(error), Placement("cuda", 0))
    assert says in line and not_says not in line and "\n" not in line


def test_a_model_that_does_not_fit_on_the_gpu_exits_71_and_does_not_fall_back_to_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from common.errors import DeviceMemoryError

    engine = gpu_engine({"DEVICE": "auto", "COMPUTE_TYPE": "float16"})
    factory = Factory("CUDA failed with error out of memory")
    with pytest.raises(DeviceMemoryError, match="fewer decoders on it"):
        engine.load(factory=factory)
    assert [m["device"] for m in factory.made] == ["cuda", "cuda"]

    def full(settings: Settings) -> Engine:
        raise DeviceMemoryError("cannot load model 'small': out of memory")

    monkeypatch.setattr(decoder_main, "Engine", full)
    s = Settings.from_env({}, MODEL_NAME="tiny.en", DEVICE="cpu", LOG_LEVEL="ERROR")
    assert decoder_main.run(s) == ExitCode.NO_DEVICE_MEMORY and int(ExitCode.NO_DEVICE_MEMORY) == 71


def test_cublas_is_preloaded_once_wherever_a_cuda_model_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(cuda_libs, "_done", None)

    def preload(dirs: Any = None) -> list[str]:
        calls.append(1)
        return []

    monkeypatch.setattr(cuda_libs, "preload", preload)
    gpu_engine({"DEVICE": "cuda"}).load(factory=Factory())
    gpu_engine({"DEVICE": "cuda"}).load(factory=Factory())  # a second model in the process
    assert calls == [1]
    gpu_engine({"DEVICE": "cpu"}).load(factory=Factory())
    assert calls == [1]


@pytest.mark.parametrize(
    "vendor, use_mkl, gemm",
    [
        ("GenuineIntel", None, "MKL"),
        ("AuthenticAMD", None, "oneDNN"),
        ("AuthenticAMD", "1", "MKL"),
        ("GenuineIntel", "0", "oneDNN"),
    ],
)
def test_the_cpu_summary_names_ctranslate2s_gemm_library(
    vendor: str, use_mkl: str | None, gemm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: %s\nmodel name\t: Some CPU 9000\n\nprocessor\t: 1\n" % vendor)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    if use_mkl is None:
        monkeypatch.delenv("CT2_USE_MKL", raising=False)
    else:
        monkeypatch.setenv("CT2_USE_MKL", use_mkl)
    assert devices.cpu_summary(str(cpuinfo)) == "Some CPU 9000, 2 cores, int8 GEMM by %s" % gemm
