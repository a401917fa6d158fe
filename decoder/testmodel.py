"""Random-weight Whisper models in CTranslate2 format, built offline.

Tests and benchmarks cannot download real weights, so they run the real faster-whisper and
CTranslate2 code on a model that has Whisper's exact token layout (51865 ids: 50257 text
tokens, <|endoftext|>, <|startoftranscript|>, 99 languages, task, LM/prev, no-speech,
<|notimestamps|>, 1501 timestamps) and, for `tiny` and `base`, Whisper's real dimensions.

The weights are scaled so that the model is *confident* (greedy and beam search agree, the
average log-probability stays above faster-whisper's fallback threshold, so no random
temperature sampling kicks in) and so that cross-attention carries enough of the audio into
the decoder that different audio gives different text. That keeps service results
reproducible and comparable with a direct `WhisperModel.transcribe`.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# openai/whisper's language order: token ids 50259.. follow it, not the alphabet.
LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no "
    "th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw "
    "gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl "
    "mg as tt haw ln ha ba jw su"
).split()
N_TEXT_TOKENS = 50257
N_TIMESTAMPS = 1501
N_MELS = 80
N_AUDIO_CTX = 1500
N_TEXT_CTX = 448


@dataclass(frozen=True)
class ModelSize:
    d_model: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    quantization: str


SIZES: dict[str, ModelSize] = {
    # A few MB: for tests, where only the code path matters.
    "micro": ModelSize(64, 2, 2, 2, "int8"),
    # Real Whisper dimensions: compute cost comparable to the real models.
    "tiny": ModelSize(384, 4, 4, 6, "float16"),
    "base": ModelSize(512, 6, 6, 8, "float16"),
    "small": ModelSize(768, 12, 12, 12, "float16"),
    "medium": ModelSize(1024, 24, 24, 16, "float16"),
    # large-v2's dimensions (large-v3 differs only in its 128 mel bins: the same compute).
    "large": ModelSize(1280, 32, 32, 20, "float16"),
}


def special_tokens() -> list[str]:
    tokens = ["<|endoftext|>", "<|startoftranscript|>"]
    tokens += ["<|%s|>" % code for code in LANGUAGES]
    tokens += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>"]
    tokens += ["<|nocaptions|>", "<|notimestamps|>"]
    tokens += ["<|%.2f|>" % (i * 0.02) for i in range(N_TIMESTAMPS)]
    return tokens


def _text_vocabulary(rng: np.random.Generator) -> tuple[list[str], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary of N_TEXT_TOKENS word-like tokens with valid merges."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = list(alphabet)
    seen = set(tokens)
    merges: list[tuple[str, str]] = []
    letters = list("abcdefghijklmnopqrstuvwxyz")
    space = "Ġ"  # GPT-2's byte-level symbol for " "
    heads = [space + c for c in letters]
    for head in heads:
        tokens.append(head)
        seen.add(head)
        merges.append((space, head[1:]))
    # Grow tokens by merging an existing token with a letter or a short suffix, so that words
    # of many lengths exist and every token is reachable by the merges before it.
    suffixes = list(letters)
    while len(tokens) < N_TEXT_TOKENS:
        pool = heads if rng.random() < 0.6 else suffixes
        left = pool[int(rng.integers(len(pool)))]
        right = suffixes[int(rng.integers(min(len(suffixes), 26 + len(suffixes) // 8)))]
        new = left + right
        if new in seen or len(new) > 12:
            continue
        seen.add(new)
        tokens.append(new)
        merges.append((left, right))
        (heads if new.startswith(space) else suffixes).append(new)
    return tokens, merges


def build_tokenizer_json(rng: np.random.Generator) -> tuple[str, list[str]]:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    text_tokens, merges = _text_vocabulary(rng)
    vocab = {tok: i for i, tok in enumerate(text_tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = special_tokens()
    tokenizer.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in specials])
    all_tokens = text_tokens + specials
    for i, tok in enumerate(specials):
        if tokenizer.token_to_id(tok) != N_TEXT_TOKENS + i:
            raise RuntimeError("special token %s landed at the wrong id" % tok)
    return tokenizer.to_str(), all_tokens


def _sinusoids(length: int, channels: int) -> np.ndarray:
    log_timescale = math.log(10000) / (channels // 2 - 1)
    inv = np.exp(-log_timescale * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


KNOBS = {"emb": 1.0, "pos": 3.0, "logit": 12.0, "q": 4.0, "xout": 4.0}


def _fill_spec(size: ModelSize, vocab_size: int, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    from ctranslate2.specs import whisper_spec

    d = size.d_model
    spec = whisper_spec.WhisperSpec(size.encoder_layers, size.heads, size.decoder_layers, size.heads)

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm(ln) -> None:  # type: ignore[no-untyped-def]
        ln.gamma = np.ones(d, np.float32)
        ln.beta = np.zeros(d, np.float32)

    def linear(lin, out: int, inp: int, gain: float = 1.0) -> None:  # type: ignore[no-untyped-def]
        lin.weight = normal((out, inp), gain / math.sqrt(inp))
        lin.bias = np.zeros(out, np.float32)

    def ffn(f) -> None:  # type: ignore[no-untyped-def]
        norm(f.layer_norm)
        linear(f.linear_0, 4 * d, d)
        linear(f.linear_1, d, 4 * d, 0.5)

    enc = spec.encoder
    # Log-mel features are roughly in [-1, 1]; these gains keep the encoder output driven by them.
    enc.conv1.weight = normal((d, N_MELS, 3), 2.0 / math.sqrt(N_MELS * 3))
    enc.conv1.bias = np.zeros(d, np.float32)
    enc.conv2.weight = normal((d, d, 3), 2.0 / math.sqrt(d * 3))
    enc.conv2.bias = np.zeros(d, np.float32)
    enc.position_encodings.encodings = _sinusoids(N_AUDIO_CTX, d) * 0.1
    norm(enc.layer_norm)
    for layer in enc.layer:
        norm(layer.self_attention.layer_norm)
        linear(layer.self_attention.linear[0], 3 * d, d)
        linear(layer.self_attention.linear[1], d, d, 0.5)
        ffn(layer.ffn)

    dec = spec.decoder
    dec.embeddings.weight = normal((vocab_size, d), KNOBS["emb"])
    dec.position_encodings.encodings = normal((N_TEXT_CTX, d), KNOBS["pos"])
    norm(dec.layer_norm)
    # An untied output projection: a tied one makes the current token predict itself, and a
    # random model then loops. Its scale sets how confident the model is.
    dec.projection.weight = normal((vocab_size, d), KNOBS["logit"] / math.sqrt(d))
    for layer in dec.layer:
        norm(layer.self_attention.layer_norm)
        linear(layer.self_attention.linear[0], 3 * d, d)
        linear(layer.self_attention.linear[1], d, d, 0.5)
        norm(layer.attention.layer_norm)
        linear(layer.attention.linear[0], d, d, KNOBS["q"])
        linear(layer.attention.linear[1], 2 * d, d)
        linear(layer.attention.linear[2], d, d, KNOBS["xout"])
        ffn(layer.ffn)
    return spec


def make_test_model(output_dir: str | Path, size: str = "micro", seed: int = 0) -> Path:
    """Write a random-weight Whisper model that `faster_whisper.WhisperModel` loads."""
    if size not in SIZES:
        raise ValueError("unknown test model size %r (choose from %s)" % (size, ", ".join(SIZES)))
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError("%s exists and is not empty" % out)
    out.mkdir(parents=True, exist_ok=True)
    dims = SIZES[size]
    rng = np.random.default_rng(seed)

    logger.info("building tokenizer (%d tokens)", N_TEXT_TOKENS + len(special_tokens()))
    tokenizer_json, vocabulary = build_tokenizer_json(rng)
    logger.info(
        "drawing %s weights (d_model=%d, %d+%d layers)", size, dims.d_model, dims.encoder_layers, dims.decoder_layers
    )
    spec = _fill_spec(dims, len(vocabulary), rng)
    spec.register_vocabulary(vocabulary)
    eot = N_TEXT_TOKENS
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [vocabulary.index("Ġ"), eot]
    spec.config.lang_ids = [eot + 2 + i for i in range(len(LANGUAGES))]
    spec.config.alignment_heads = [
        [layer, head] for layer in range(dims.decoder_layers // 2, dims.decoder_layers) for head in range(dims.heads)
    ]
    spec.validate()
    spec.optimize(quantization=dims.quantization)
    logger.info("writing %s", out)
    spec.save(str(out))
    (out / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    preprocessor = {"feature_size": N_MELS, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400}
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")
    (out / "stt_test_model.json").write_text(json.dumps({"size": size, "seed": seed}), encoding="utf-8")
    return out


def cached_test_model(size: str = "micro", seed: int = 0, root: Path | None = None) -> Path:
    """A test model built once per machine under a cache folder (tests, benchmarks)."""
    base = root or Path(tempfile.gettempdir()) / "stt-test-models"
    target = base / ("%s-seed%d" % (size, seed))
    if (target / "model.bin").is_file() and (target / "stt_test_model.json").is_file():
        return target
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="build-", dir=base))
    make_test_model(staging / "m", size=size, seed=seed)
    try:
        (staging / "m").rename(target)
    except OSError:
        if not (target / "model.bin").is_file():
            raise
    return target
