"""How much GPU memory a decoder needs, from the model's own dimensions (no GPU needed), and so
how many decoders one GPU holds by default (`stt up`; benchmarks/gpu_memory.py prints the table
in docs/operations/gpus.md).

A decoder on a GPU has two lanes, each with a copy of the weights (so that a final never waits
for a background decode on the same CTranslate2 worker). Each lane's beam search keeps, for every
sequence (batch x beam; the encoder output is tiled per beam), the cross-attention keys and
values of every decoder layer over Whisper's 1500 encoder frames, and the self-attention keys
and values over up to 448 tokens.
"""

from __future__ import annotations

import os

# name: (parameters, d_model, decoder layers) from the Whisper papers and model cards; the most
# specific names first (a name is matched by what it contains).
MODELS = {
    "distil-large-v3": (756e6, 1280, 2),
    "large-v3-turbo": (809e6, 1280, 4),
    "turbo": (809e6, 1280, 4),
    "large-v3": (1550e6, 1280, 32),
    "large": (1550e6, 1280, 32),
    "medium": (769e6, 1024, 24),
    "small": (244e6, 768, 12),
    "base": (74e6, 512, 6),
    "tiny": (39e6, 384, 4),
}
ENCODER_FRAMES, MAX_TOKENS = 1500, 448
MB = 1 << 20
MAX_PER_GPU = 4  # past this, more processes on one GPU add contention, not throughput (docs/operations/gpus.md)
GPU_SHARE = 0.8  # of a GPU's memory, the decoders' at most: the rest for CUDA's own and fragmentation


def dimensions(model: str) -> tuple[float, int, int]:
    """(parameters, d_model, decoder layers) of a model named or found at `model`; a directory of
    unknown name is judged by its model.bin's size (float16 weights), else taken as large."""
    name = model.lower()
    for family, dims in MODELS.items():
        if family in name:
            return dims
    weights = os.path.join(model, "model.bin")
    if os.path.isfile(weights):
        params = os.path.getsize(weights) / 2
        return min(MODELS.values(), key=lambda dims: abs(dims[0] - params))
    return MODELS["large-v3"]


def lane_cache_bytes(d_model: int, layers: int, sequences: int, dtype_bytes: int) -> float:
    cross = layers * 2 * sequences * ENCODER_FRAMES * d_model * dtype_bytes
    self_attention = layers * 2 * sequences * MAX_TOKENS * d_model * dtype_bytes
    encoder_out = sequences * ENCODER_FRAMES * d_model * dtype_bytes
    return cross + self_attention + encoder_out


def decoder_bytes(model: str, batch: int, beam: int = 5, compute_type: str = "float16") -> tuple[float, float]:
    """(the weights of both lanes, each lane's decoding cache) in bytes, at float16 (int8 weights
    for the int8 compute types; float32 for float32)."""
    params, d_model, layers = dimensions(model)
    dtype = 4 if compute_type == "float32" else 2
    weights = 2 * params * (1 if compute_type.startswith("int8") else dtype)
    return weights, lane_cache_bytes(d_model, layers, beam * batch, dtype)


def decoders_per_gpu(model: str, compute_type: str, batch: int, beam: int, gpu_mb: int | None) -> int:
    """How many decoders one GPU of `gpu_mb` holds by default: each its two lanes' weights and
    caches at this batch and beam, within GPU_SHARE of the card, at most MAX_PER_GPU; 1 when the
    memory is unknown or not even one fits (it is then said at load, and the fix)."""
    if not gpu_mb:
        return 1
    weights, cache = decoder_bytes(model, batch, beam, compute_type)
    return max(1, min(MAX_PER_GPU, int(gpu_mb * MB * GPU_SHARE // (weights + 2 * cache))))
