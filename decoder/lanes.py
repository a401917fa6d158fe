"""The model loaded into the decoder's two lanes, proven to work before the decoder says ready.

Two lanes: finals, and the background (interims, file parts). Each has a CTranslate2 model of
its own with one worker, so a final never queues behind a background decode, on a CPU or a GPU
(CTranslate2 gives a model's requests to its workers first come, first served: two lanes on one
model's workers would let a background batch, and its alignment and language-detection calls,
hold the worker a final needs). The price is a second copy of the weights (docs/operations/gpus.md: the memory
table). On a CPU the background copy is built in a thread at BACKGROUND_NICE, whose priority
CTranslate2's worker and OpenMP threads inherit, so a final decoding beside it keeps the cores;
`BACKGROUND_NICE=0` shares one CPU model (two workers) at one priority instead.

A warm-up decode runs on each model as it loads: CTranslate2 loads cuBLAS only at the first
decode, so a missing CUDA library (or any CUDA error) is a load error here, said in one line
with its fix, not a decoder that says ready and fails every final.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from common.errors import DeviceMemoryError, ModelLoadError
from common.process import lower_thread_priority, threads_per_lane, usable_cores
from common.settings import DecoderSettings
from decoder import cuda_libs
from decoder.devices import Placement
from decoder.scheduler import Lane

logger = logging.getLogger(__name__)

T = TypeVar("T")
CUDA_HINT = (
    "CUDA 12's cuBLAS is needed on a GPU: pip install -e '.[gpu]' (or nvidia-cublas-cu12), "
    "or put its libraries on LD_LIBRARY_PATH; or run with DEVICE=cpu"
)


def cpu_threads(settings: DecoderSettings) -> int:
    """CTranslate2 threads per lane: CPU_THREADS, or for 0 half the cores this process may run on
    (a lane each), at most 4. CTranslate2's own default is 4 whatever the machine: on 2 cores
    (measured with tiny.en) two lanes of 4 threads decode a final 15-25% slower than two of 1,
    and a lane of 2 threads is no faster than one of 1 (docs/benchmarks/latency.md)."""
    return settings.CPU_THREADS or threads_per_lane(usable_cores(), len(Lane))


def at_nice(nice: int, build: Callable[[], T]) -> T:
    """`build()` run in a thread of its own at `nice` (Linux nice is per thread, and threads
    inherit it from the thread that starts them); at the current priority where that is refused."""
    out: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            if not lower_thread_priority(nice):
                logger.warning("cannot lower the background lane's priority; it runs at the final lane's")
            out.append(build())
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="load-background-lane")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return out[0]


def load_lanes(
    factory: Any, path: str, settings: DecoderSettings, place: Placement, compute_type: str
) -> dict[str, Any]:
    """The WhisperModel each lane decodes with (see the module's docstring)."""

    if place.device == "cuda":
        cuda_libs.preload_once()

    def load(workers: int) -> Any:
        return factory(
            path,
            device=place.device,
            device_index=place.index,
            compute_type=compute_type,
            cpu_threads=cpu_threads(settings),
            num_workers=workers,
        )

    if place.device == "cpu":
        if not settings.BACKGROUND_NICE:
            shared = load(len(Lane))
            return {lane: shared for lane in Lane}
        return {Lane.FINAL: load(1), Lane.BACKGROUND: at_nice(settings.BACKGROUND_NICE, lambda: load(1))}
    return {Lane.FINAL: load(1), Lane.BACKGROUND: load(1)}


def warm_up(whisper: Any) -> None:
    """One short decode on `whisper` (a WhisperModel): it proves the device and its libraries
    work, and the first real final does not pay for their loading."""
    noise = np.random.default_rng(0).normal(0, 0.01, 8000).astype(np.float32)
    segments, _ = whisper.transcribe(
        noise,
        language="en",
        beam_size=1,
        temperature=0.0,
        without_timestamps=True,
        condition_on_previous_text=False,
        max_new_tokens=4,
        vad_filter=False,
    )
    list(segments)


def is_cuda_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("cuda", "cublas", "cudnn", "libcu", "gpu", "device"))


def is_out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower()


def cuda_cause(text: str) -> str:
    """What a CUDA failure's text says went wrong, and its fix: a missing cuBLAS is one cause
    among several, and the message must not send a user after the wrong one."""
    low = text.lower()
    if "out of memory" in low:
        return (
            "the GPU has not enough free memory for this model: fewer decoders on it (DECODERS), "
            "a smaller MODEL_NAME, or COMPUTE_TYPE=int8_float16"
        )
    if "libcublas" in low or "libcudart" in low or "cannot be loaded" in low:
        return CUDA_HINT + (
            "; a machine with CUDA 13's libraries only (libcublas.so.13) still needs CUDA 12's for "
            "this CTranslate2 build: the gpu extra brings them"
            if ".so.12" in low
            else ""
        )
    if "ptx" in low or "driver version is insufficient" in low or "unsupported toolchain" in low:
        return (
            "the NVIDIA driver is older than this CTranslate2 build's CUDA (12.x) needs: update the "
            "driver (nvidia-smi shows the CUDA version it supports), or run with DEVICE=cpu"
        )
    if "no kernel image" in low:
        return (
            "this CTranslate2 build has no code for this GPU's compute capability: use a GPU of "
            "compute capability 5.0 or newer, or DEVICE=cpu"
        )
    return "a CUDA error; nvidia-smi shows whether the GPU and its driver are usable; DEVICE=cpu serves without it"


def describe(exc: BaseException, place: Placement) -> str:
    """One line for a load failure, with its cause and fix when it is CUDA's."""
    line = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    if place.device == "cuda" and is_cuda_failure(exc):
        return "cannot use cuda:%d (%s). %s" % (place.index, line, cuda_cause(str(exc)))
    return line


def proven(build: Callable[[], dict[str, Any]], place: Placement, name: str) -> dict[str, Any]:
    """The lanes `build` makes, each model warmed up; ModelLoadError (one line, with the fix)
    when that fails."""
    try:
        whispers = build()
        for whisper in {id(w): w for w in whispers.values()}.values():
            warm_up(whisper)
    except ModelLoadError:
        raise
    except Exception as exc:  # any loader or first-decode failure means this device cannot serve
        error = DeviceMemoryError if place.device == "cuda" and is_out_of_memory(exc) else ModelLoadError
        raise error("cannot load model %r: %s" % (name, describe(exc, place))) from exc
    return whispers
