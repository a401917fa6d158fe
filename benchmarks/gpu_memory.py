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

# name: (parameters, d_model, decoder layers) from the Whisper papers and model cards.
MODELS = {
    "tiny": (39e6, 384, 4),
    "base": (74e6, 512, 6),
    "small": (244e6, 768, 12),
    "medium": (769e6, 1024, 24),
    "large-v3": (1550e6, 1280, 32),
    "large-v3-turbo": (809e6, 1280, 4),
    "distil-large-v3": (756e6, 1280, 2),
}
ENCODER_FRAMES, MAX_TOKENS = 1500, 448
GB = 1 << 30


def lane_cache_bytes(d_model: int, layers: int, sequences: int, dtype_bytes: int) -> float:
    cross = layers * 2 * sequences * ENCODER_FRAMES * d_model * dtype_bytes
    self_attention = layers * 2 * sequences * MAX_TOKENS * d_model * dtype_bytes
    encoder_out = sequences * ENCODER_FRAMES * d_model * dtype_bytes
    return cross + self_attention + encoder_out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype-bytes", type=int, default=2, help="2: float16 (the GPU default), 4: float32")
    args = p.parse_args()
    rows = []
    print("| model | weights ×2 lanes | beam | batch | cache per lane | decoder total |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (params, d_model, layers) in MODELS.items():
        weights = 2 * params * args.dtype_bytes
        for beam, batch in ((5, 1), (5, 4), (5, 8), (1, 8)):
            cache = lane_cache_bytes(d_model, layers, beam * batch, args.dtype_bytes)
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
