"""The README documents what the code declares: every setting, every model, the two commands."""

from __future__ import annotations

import re

import pytest
from apitools import REPO

from watercolor.config import SETTINGS
from watercolor.models import MODELS

README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def shown_default(cell: str):
    return "" if cell == "(empty)" else cell.strip("`")


def test_settings_table_lists_exactly_the_declared_settings_with_their_defaults():
    rows = {row[0].strip("`"): row for row in table_rows(section("Settings"))}
    assert sorted(rows) == sorted(s.name for s in SETTINGS)
    for setting in SETTINGS:
        _, default, description = rows[setting.name]
        shown = shown_default(default)
        if setting.kind is str:
            assert shown == setting.default, setting.name
        else:
            assert setting.kind(shown) == setting.default, setting.name
        assert description, setting.name


def test_models_table_lists_every_model():
    rows = {row[0].strip("`"): row for row in table_rows(section("Models"))}
    assert list(rows) == list(MODELS)
    for name, spec in MODELS.items():
        _, scales, best_for, speed = rows[name]
        assert scales == (", ".join(f"{s}x" for s in spec.scales) or "any")
        assert best_for == spec.best_for and speed == spec.cpu_speed


def test_quick_start_is_exactly_two_commands():
    block = re.search(r"```sh\n(.*?)```", section("Quick start"), re.S)
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["./run.sh", "./test.sh"]


@pytest.mark.parametrize("route", ["POST /v1/upscale", "POST /", "/v1/models", "/healthz", "/readyz",
                                   "/metrics", "/openapi.json"])
def test_every_route_has_an_example(route):
    path = route.split()[-1]
    if path == "/":
        assert "localhost:5000/ " in README
    else:
        assert f"localhost:5000{path}" in README
