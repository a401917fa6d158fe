"""How much GPU memory a decoder needs: its two lanes' weights and their decoding caches, per
model, beam and batch, from the models' own dimensions (no GPU needed).

    python benchmarks/gpu_memory.py [--dtype-bytes 2]

A decoder on a GPU has two lanes, each with a copy of the weights (so that a final never waits
for a background decode on the same CTranslate2 worker). Each lane's beam search keeps, for every
sequence (batch x beam; the encoder output is tiled per beam), the cross-attention keys and
values of every decoder layer over Whisper's 1500 encoder frames, and the self-attention keys
and values over up to 448 tokens. Weights: the parameter count at float16. Writes
benchmarks/results/gpu-memory.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from decoder.memory import MODELS, decoder_bytes

GB = 1 << 30
SHOWN = ("tiny", "base", "small", "medium", "large-v3", "large-v3-turbo", "distil-large-v3")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype-bytes", type=int, default=2, help="2: float16 (the GPU default), 4: float32")
    args = p.parse_args()
    rows = []
    print("| model | weights ×2 lanes | beam | batch | cache per lane | decoder total |")
    print("| --- | --- | --- | --- | --- | --- |")
    compute = "float32" if args.dtype_bytes == 4 else "float16"
    for name in SHOWN:
        assert name in MODELS
        for beam, batch in ((5, 1), (5, 4), (5, 8), (1, 8)):
            weights, cache = decoder_bytes(name, batch, beam, compute)
            total = weights + 2 * cache
            rows.append(
                {
                    "model": name,
                    "beam": beam,
                    "batch": batch,
                    "weights_gb": weights / GB,
                    "cache_per_lane_gb": cache / GB,
                }
            )
            print(
                "| %s | %.2f GB | %d | %d | %.2f GB | %.1f GB |"
                % (name, weights / GB, beam, batch, cache / GB, total / GB)
            )
    out = ROOT / "benchmarks" / "results" / "gpu-memory.json"
    out.write_text(json.dumps(rows, indent=1))
    print("wrote", out.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
