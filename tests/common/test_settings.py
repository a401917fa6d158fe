from __future__ import annotations

import subprocess
import sys

import pytest

from common.errors import ExitCode, SettingsError
from common.settings import Settings, describe


def test_seed_defaults_are_kept() -> None:
    s = Settings.from_env({})
    assert (s.MODEL_NAME, s.DEVICE, s.COMPUTE_TYPE) == ("base", "auto", "float16")
    assert (s.INTERIM_MIN_MS, s.FINAL_SILENCE_MS_MIN, s.FINAL_SILENCE_MS_MAX) == (350, 400, 700)


def test_values_are_typed() -> None:
    s = Settings.from_env({"DECODE_BATCH": "8", "FINAL_TIMEOUT_S": "2.5", "LOG_LEVEL": "debug"})
    assert s.DECODE_BATCH == 8 and s.FINAL_TIMEOUT_S == 2.5 and s.LOG_LEVEL == "DEBUG"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"DECODE_BATCH": "many"}, "DECODE_BATCH"),
        ({"VAD_MODE": "7"}, "VAD_MODE"),
        ({"DEVICE": "tpu"}, "DEVICE"),
        ({"FINAL_SILENCE_MS_MIN": "900"}, "FINAL_SILENCE_MS_MIN"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
    ],
)
def test_bad_value_names_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert err.value.name == name and name in str(err.value)


def test_bad_setting_stops_the_process_with_config_exit_code() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stt", "decoder"],
        env={"DECODE_BATCH": "zero", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == ExitCode.CONFIG
    assert "DECODE_BATCH" in proc.stderr


def test_settings_know_what_was_given() -> None:
    s = Settings.from_env({"PORT": "9000"})
    assert s.is_set("PORT") and not s.is_set("MODEL_NAME")
    assert s.to_env() == {"PORT": "9000"}  # a child sees defaults as defaults
    assert Settings.from_env({}, MODEL_NAME="base").is_set("MODEL_NAME")
    assert s.replace(DECODERS=2).is_set("DECODERS")
    assert "given" not in {name for name, _, _ in describe()}


def test_a_blank_api_key_is_a_configuration_error_not_auth_switched_off() -> None:
    assert Settings.from_env({"API_KEY": "one,two"}).API_KEY == "one,two"
    for blank in (" ", "one,,two", "one, "):
        with pytest.raises(SettingsError, match=r"API_KEY.*blank"):
            Settings.from_env({"API_KEY": blank})
    with pytest.raises(SettingsError) as bad_url:
        Settings.from_env({"REDIS_URL": "http://:hunter2@redis:6379"})
    assert "hunter2" not in str(bad_url.value)
