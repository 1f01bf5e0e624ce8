"""Settings: declared once, validated at start-up with the bad variable named."""

from __future__ import annotations

import pytest

from watercolor.config import SETTINGS, ConfigError, load_settings


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
    ],
    ids=["port-not-int", "port-range", "device-choice", "nan", "slots-zero", "backends", "tile-small"],
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
