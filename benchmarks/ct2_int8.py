"""A CTranslate2 Whisper model re-saved with int8 weights: half the size of float16, so the real
tiny.en (75 MB) travels to a GPU machine whose transfers carry 64 MiB (`scripts/gpu-check
--prepare DIR --words-model`). CTranslate2 dequantizes on load when asked for float16, so its
compute is a float16 model's; only the weights' rounding differs (`--check` decodes the same
speech with both and prints both WERs).

    python -m benchmarks.ct2_int8 SRC DST [--check]

The weights are read from SRC/model.bin's own format and quantized by CTranslate2's own spec code
(`WhisperSpec.optimize("int8_float16")`: int8 rows with a float32 scale each), as its converters
do; the files beside model.bin are copied unchanged. On the 12 recorded utterances of `--check`,
tiny.en's WER was 10.00% with its float16 weights and 9.09% with these (2026-12-04).
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16)  # CTranslate2's DataType order


def _string(f: BinaryIO) -> str:
    (length,) = struct.unpack("H", f.read(2))
    return f.read(length)[:-1].decode()


def read_weights(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """model.bin's variables (name: array) and aliases (name: the variable it names)."""
    with path.open("rb") as f:
        struct.unpack("I", f.read(4))  # the binary version
        _string(f)  # the spec's name
        struct.unpack("I", f.read(4))  # its revision
        (count,) = struct.unpack("I", f.read(4))
        variables = {}
        for _ in range(count):
            name = _string(f)
            (rank,) = struct.unpack("B", f.read(1))
            shape = struct.unpack("%dI" % rank, f.read(4 * rank))
            (dtype,) = struct.unpack("B", f.read(1))
            (size,) = struct.unpack("I", f.read(4))
            variables[name] = np.frombuffer(f.read(size), dtype=DTYPES[dtype]).reshape(shape)
        (count,) = struct.unpack("I", f.read(4))
        aliases = dict((_string(f), _string(f)) for _ in range(count))
    return variables, aliases


def quantize(src: Path, dst: Path) -> None:
    from ctranslate2.specs import WhisperSpec
    from ctranslate2.specs.model_spec import NumpyVariable, visit_spec

    variables, aliases = read_weights(src / "model.bin")
    heads = _heads(variables)
    spec = WhisperSpec(_layers(variables, "encoder"), heads, _layers(variables, "decoder"), heads)

    def fill(scope: Any, name: str, _value: Any) -> None:
        source = aliases.get(name, name)
        if source in variables:
            setattr(scope, name.split("/")[-1], NumpyVariable(np.array(variables[source])))

    visit_spec(spec, fill)
    # The vocabulary is only for validate()'s size check; the files beside model.bin are copied.
    spec.register_vocabulary((src / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1])
    spec.validate()  # as the converters do: plain values become variables
    spec.optimize(quantization="int8_float16")
    dst.mkdir(parents=True, exist_ok=True)
    spec._serialize(str(dst / "model.bin"))  # only the weights: the other files are copied as they are
    for other in src.iterdir():
        if other.name != "model.bin" and other.is_file():
            shutil.copy(other, dst / other.name)


def _layers(variables: dict[str, np.ndarray], side: str) -> int:
    return len({n.split("/")[1] for n in variables if re.match(side + r"/layer_\d+/", n)})


def _heads(variables: dict[str, np.ndarray]) -> int:
    width = variables["encoder/layer_0/self_attention/linear_0/weight"].shape[1]
    return max(1, int(width) // 64)  # Whisper's heads are 64 wide


def check(src: Path, dst: Path) -> None:
    """Both models' WER on the first 12 recorded LibriSpeech utterances (benchmarks/data/real)."""
    from faster_whisper import WhisperModel

    from benchmarks.evalset import recorded_utterances
    from stt.wer import wer

    clips = [speech for speech, _ in recorded_utterances()[:12]]
    for path in (src, dst):
        model = WhisperModel(str(path), device="cpu", compute_type="int8")
        said = [" ".join(s.text for s in model.transcribe(c.audio, beam_size=1, language="en")[0]) for c in clips]
        score = wer(" ".join(" ".join(c.texts) for c in clips), " ".join(said))
        print("%s: WER %.2f%% on %d recorded utterances" % (path, 100 * score, len(clips)), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--check", action="store_true", help="decode the same speech with both and print both WERs")
    args = p.parse_args(argv)
    quantize(args.src, args.dst)
    before, after = ((path / "model.bin").stat().st_size / 1e6 for path in (args.src, args.dst))
    print("%s: int8 weights, %.1f MB (from %.1f MB)" % (args.dst, after, before))
    if args.check:
        check(args.src, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
