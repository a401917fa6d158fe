"""Which device each decoder runs on, and at which compute type: decided from what CTranslate2
reports (`get_cuda_device_count`, which honours CUDA_VISIBLE_DEVICES, and
`get_supported_compute_types` per device), never assumed.

- `DEVICE=cpu`: `DECODERS` decoders (default 2) on the CPU.
- `DEVICE=auto`: the GPUs when any is visible, else the CPU.
- `DEVICE=cuda`: the GPUs; none visible is a `DeviceError` (the decoder and `stt up` exit 69 and
  say so), never a decoder that claims CUDA and fails later.
- On GPUs, by default as many decoders per visible GPU as its memory holds for the model
  (decoder/memory.py, at most 4); `DECODERS=N` spreads N decoders round-robin
  over them (several on one GPU share its index, each with its own model: they share the GPU's
  memory and compute). A `DEVICE_INDEX` that was set pins every decoder to that GPU.
- The compute type asked for is used where the device supports it, else the first supported of
  a fallback list meant to keep its speed (int8_float16 becomes int8_float32 on a Pascal card,
  not float32); on a CPU the float16 family becomes int8 (measured fastest there).
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable, Collection
from dataclasses import dataclass

from common.errors import SttError
from common.settings import DecoderSettings

CPU_DECODERS = 2  # decoders without a GPU when DECODERS is 0

# For each compute type asked for, what to try in turn on a device that lacks it.
GPU_FALLBACKS: dict[str, tuple[str, ...]] = {
    "float16": ("float16", "bfloat16", "int8_float16", "int8_float32", "float32"),
    "bfloat16": ("bfloat16", "float16", "int8_bfloat16", "int8_float16", "int8_float32", "float32"),
    "int8_float16": ("int8_float16", "int8_bfloat16", "int8_float32", "int8", "float16", "float32"),
    "int8_bfloat16": ("int8_bfloat16", "int8_float16", "int8_float32", "int8", "bfloat16", "float16", "float32"),
    "int8_float32": ("int8_float32", "int8", "float32"),
    "int8": ("int8", "int8_float32", "float32"),
    "int16": ("int16", "int8_float32", "float32"),
    "float32": ("float32",),
}
CPU_FALLBACKS: dict[str, tuple[str, ...]] = {
    "float16": ("int8", "int8_float32", "float32"),
    "bfloat16": ("int8", "int8_float32", "float32"),
    "int8_float16": ("int8", "int8_float32", "float32"),
    "int8_bfloat16": ("int8", "int8_float32", "float32"),
    "int8_float32": ("int8_float32", "int8", "float32"),
    "int8": ("int8", "int8_float32", "float32"),
    "int16": ("int16", "int8", "float32"),
    "float32": ("float32",),
}
PASSTHROUGH = ("default", "auto")  # CTranslate2 decides: the model's own type, or its fastest


class DeviceError(SttError):
    """The device asked for cannot be had (no GPU visible, an index past the last one)."""


@dataclass(frozen=True)
class Placement:
    device: str  # "cuda" | "cpu"
    index: int


def cuda_count() -> int:
    """GPUs CTranslate2 can use (those CUDA_VISIBLE_DEVICES leaves visible); 0 without a driver."""
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # a CTranslate2 built without CUDA, a broken driver: no GPU to use
        return 0


def _no_gpu(settings: DecoderSettings) -> DeviceError:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return DeviceError(
        "DEVICE=%s but no CUDA device is visible%s; set DEVICE=cpu or DEVICE=auto, or give the process a GPU"
        % (settings.DEVICE, " (CUDA_VISIBLE_DEVICES=%r)" % visible if visible is not None else "")
    )


def device_of(settings: DecoderSettings, gpus: int) -> Placement:
    """Where this decoder runs (its DEVICE_INDEX included)."""
    if settings.DEVICE == "cpu" or (settings.DEVICE == "auto" and gpus == 0):
        return Placement("cpu", 0)
    if gpus == 0:
        raise _no_gpu(settings)
    if settings.DEVICE_INDEX >= gpus:
        raise DeviceError(
            "DEVICE_INDEX=%d but %d CUDA device%s visible (indices 0-%d)"
            % (settings.DEVICE_INDEX, gpus, " is" if gpus == 1 else "s are", gpus - 1)
        )
    return Placement("cuda", settings.DEVICE_INDEX)


def cpu_summary(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU, its cores, and the library CTranslate2 runs its int8 matrix products with there,
    for logs and benchmark results: on x86, Intel MKL on a GenuineIntel CPU and oneDNN on any
    other unless CT2_USE_MKL says otherwise (CTranslate2's src/cpu/backend.cc). Timings are
    comparable only on like CPUs: benchmarks/turns.py's speech took 20 s of decoding on one
    2-core machine and 33-40 s on another (an AMD EPYC, oneDNN), where forcing MKL made tiny.en
    six times slower still."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not line.strip():
                    break  # the first CPU's block says it for all
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    vendor = fields.get("vendor_id", "")
    if platform.machine() in ("x86_64", "AMD64"):
        forced = os.environ.get("CT2_USE_MKL", "").strip().lower()
        mkl = forced in ("1", "true", "on") if forced else vendor == "GenuineIntel"
        gemm = "MKL" if mkl else "oneDNN"
    else:
        gemm = "CTranslate2's default"
    return "%s, %d cores, int8 GEMM by %s" % (name, os.cpu_count() or 1, gemm)


def nvidia_smi(fields: str, index: int | None = None) -> list[list[str]]:
    """nvidia-smi's answer for `fields` (its --query-gpu names), a row per GPU; [] where there
    is none to ask."""
    command = ["nvidia-smi", "--query-gpu=" + fields, "--format=csv,noheader,nounits"]
    if index is not None:
        command.append("--id=%d" % index)
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]


def placements(settings: DecoderSettings, gpus: int, per_gpu: int = 1) -> list[Placement]:
    """Where each decoder `stt up` starts runs (`per_gpu` decoders on each GPU unless DECODERS
    says how many in all)."""
    if settings.DEVICE == "cpu" or (settings.DEVICE == "auto" and gpus == 0):
        return [Placement("cpu", 0)] * (settings.DECODERS or CPU_DECODERS)
    if gpus == 0:
        raise _no_gpu(settings)
    if settings.is_set("DEVICE_INDEX"):
        indices = [device_of(settings, gpus).index]
    else:
        indices = list(range(gpus))
    return [Placement("cuda", indices[i % len(indices)]) for i in range(settings.DECODERS or len(indices) * per_gpu)]


def compute_type(asked: str, device: str, supported: Collection[str]) -> str:
    """The compute type to load with: `asked` if supported, else its first supported fallback."""
    if asked in PASSTHROUGH or asked in supported:
        return asked
    table = CPU_FALLBACKS if device == "cpu" else GPU_FALLBACKS
    for candidate in table.get(asked, ("float32",)):
        if candidate in supported:
            return candidate
    return "default"


def resolve(
    settings: DecoderSettings,
    count: Callable[[], int] = cuda_count,
    supported: Callable[[str, int], Collection[str]] | None = None,
) -> tuple[Placement, str]:
    """(where this decoder runs, its compute type)."""
    place = device_of(settings, count())
    if supported is None:
        import ctranslate2

        supported = ctranslate2.get_supported_compute_types
    return place, compute_type(settings.COMPUTE_TYPE, place.device, set(supported(place.device, place.index)))
