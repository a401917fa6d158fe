"""CUDA 12's cuBLAS from pip wheels (the `gpu` extra: `nvidia-cublas-cu12`), found without
LD_LIBRARY_PATH edits.

CTranslate2 dlopens `libcublas.so.12` (and `libcublasLt.so.12`) by name at its first decode; a
wheel installs them under `site-packages/nvidia/cublas/lib`, where the dynamic loader does not
look. Loading them once, globally, before the model is what makes that name resolve: the loader
finds a library of that soname already in the process. Where the wheels are not installed
(system CUDA, a CPU machine) nothing happens.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGES = ("nvidia.cublas", "nvidia.cuda_runtime", "nvidia.cuda_nvrtc")
LIBRARIES = ("libcudart.so.12", "libcublasLt.so.12", "libcublas.so.12")  # in dependency order


def wheel_lib_dirs() -> list[Path]:
    """The `lib` folders of the installed NVIDIA wheels (computed from where Python finds them,
    never an assumed site-packages path)."""
    dirs = []
    for package in PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            lib = Path(location) / "lib"
            if lib.is_dir():
                dirs.append(lib)
    return dirs


_lock = threading.Lock()
_done: list[str] | None = None


def preload_once() -> list[str]:
    """`preload()` of the wheels' libraries, the first time only: every CUDA model is built
    after it (decoder/lanes.py), whichever entry point builds it (the decoder, `stt bench`'s
    floor, the GPU check, the benchmarks)."""
    global _done
    with _lock:
        if _done is None:
            _done = preload()
        return _done


def preload(dirs: list[Path] | None = None) -> list[str]:
    """Load the CUDA libraries found in `dirs` (default: the wheels') into the process, globally;
    the paths loaded."""
    dirs = wheel_lib_dirs() if dirs is None else dirs
    loaded = []
    for name in LIBRARIES:
        path = next((d / name for d in dirs if (d / name).exists()), None)
        if path is None:
            continue
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            loaded.append(str(path))
        except OSError as exc:
            logger.warning("cannot preload %s: %s", path, exc)
    if loaded:
        logger.info("CUDA libraries from wheels: %s", ", ".join(Path(p).name for p in loaded))
    return loaded
