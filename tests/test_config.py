"""Settings: declared once, validated at start-up with the bad variable named."""

from __future__ import annotations

import pytest

from watercolor.config import SETTINGS, ConfigError, load_setting, load_settings


def test_defaults_from_an_empty_environment():
    s = load_settings({})
    assert (s.api_port, s.process_port, s.process_service_host, s.process_service_port) == \
        (5000, 32017, "127.0.0.1", 32017)
    assert s.backends == [("127.0.0.1", 32017)]


def test_every_setting_is_wtc_prefixed_documented_and_unique():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    for s in SETTINGS:
        assert s.name.startswith("WTC_") and s.description


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"WTC_API_PORT": "http"}, "WTC_API_PORT='http' is not a valid int"),
        ({"WTC_API_PORT": "70000"}, "WTC_API_PORT='70000' must be a TCP port"),
        ({"WTC_DEVICE": "tpu"}, "WTC_DEVICE='tpu' must be one of: auto, cpu, vulkan"),
        ({"WTC_API_DEADLINE": "nan"}, "WTC_API_DEADLINE='nan' is not a valid float"),
        ({"WTC_SLOTS": "0"}, "WTC_SLOTS='0' must be at least 1"),
        ({"WTC_PROCESS_BACKENDS": "a:1,b"}, "WTC_PROCESS_BACKENDS"),
        ({"WTC_TILE_SIZE": "8"}, "WTC_TILE_SIZE='8'"),
        ({"WTC_DEFAULT_MODEL": "esrgan"}, "WTC_DEFAULT_MODEL='esrgan' is no model name (choose from: "),
        ({"WTC_PRELOAD": "lanczos, esrgan"}, "WTC_PRELOAD='lanczos, esrgan' names no such model: esrgan"),
        ({"WTC_LOCAL_BACKENDS": "0"}, "WTC_LOCAL_BACKENDS='0' must be between 1 and 64"),
    ],
    ids=["port-not-int", "port-range", "device-choice", "nan", "slots-zero", "backends", "tile-small",
         "default-model", "preload", "no-local-backends"],
)
def test_bad_values_name_the_variable_and_value(env, words):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert words in str(info.value)


def test_backend_list_overrides_the_service_address():
    s = load_settings({"WTC_PROCESS_BACKENDS": "127.0.0.1:32017, 127.0.0.1:32018",
                       "WTC_PROCESS_SERVICE_HOST": "10.0.0.9"})
    assert s.backends == [("127.0.0.1", 32017), ("127.0.0.1", 32018)]


def test_blank_values_mean_the_default():
    assert load_settings({"WTC_API_PORT": " "}).api_port == 5000


def test_model_settings_take_catalogue_names():
    s = load_settings({"WTC_DEFAULT_MODEL": "lanczos", "WTC_PRELOAD": "waifu2x-photo, lanczos"})
    assert (s.default_model, s.preload) == ("lanczos", "waifu2x-photo, lanczos")


def test_one_setting_is_read_and_checked_alone():
    assert load_setting("WTC_API_PORT", {"WTC_API_PORT": "8080", "WTC_SLOTS": "0"}) == 8080
    assert load_setting("WTC_API_PORT", {}) == 5000
    with pytest.raises(ConfigError, match="WTC_API_PORT='x' is not a valid int"):
        load_setting("WTC_API_PORT", {"WTC_API_PORT": "x"})


@pytest.mark.parametrize("scale, text", [(2.0, "2"), (10.0, "10"), (1.5, "1.5"), (1.2345678, "1.2345678"),
                                          (1.0000001, "1.0000001"), (8, "8")])
def test_scale_text_is_the_scale_as_written(scale, text):
    from watercolor.params import scale_text

    assert scale_text(scale) == text
