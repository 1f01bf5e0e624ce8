"""The ``watercolor upscale`` client's pieces: result names, the request URL, the progress bar."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from watercolor.cli import build_parser
from watercolor.client import ProgressBar, Request, output_path


@pytest.mark.parametrize(("source", "out_dir", "scale", "mime", "expected"), [
    ("photos/cat.jpg", None, "4", "image/png", "photos/cat_x4.png"),
    ("cat.jpg", "big", "1.5", "image/jpeg", "big/cat_x1.5.jpg"),
    ("a.b.webp", None, "2", "image/webp; charset=binary", "a.b_x2.webp"),
    ("x.png", None, "2", "application/weird", "x_x2.png"),
], ids=["next-to-input", "into-dir", "double-extension", "unknown-type"])
def test_output_names(source, out_dir, scale, mime, expected):
    folder = Path(out_dir) if out_dir else None
    assert output_path(Path(source), folder, scale, mime) == Path(expected)


def test_request_url_carries_only_given_parameters():
    assert Request("http://h:5000/").endpoint() == "http://h:5000/v1/upscale"
    url = Request("http://h:5000", scale="2", model="lanczos", format=None).endpoint()
    assert url == "http://h:5000/v1/upscale?scale=2&model=lanczos"
    url = Request("http://h:5000", model="waifu2x-photo", options=(("denoise", "2"),)).endpoint("/v1/jobs")
    assert url == "http://h:5000/v1/jobs?model=waifu2x-photo&denoise=2"


def test_upscale_takes_model_options_like_send():
    parser = build_parser()
    for command in ("upscale", "send"):
        args = parser.parse_args([command, "a.png", *(["b.png"] if command == "send" else []),
                                  "--option", "denoise=1", "--option", "x = y=z"])
        assert args.option == [("denoise", "1"), ("x", " y=z")]


@pytest.mark.parametrize(("text", "words"), [
    ("denoise", "wants NAME=VALUE, not 'denoise'"),
    ("=1", "wants NAME=VALUE"),
    ("scale=2", "scale is not a model option: use --scale"),
    ("tile_size=64", "tile_size is not a model option: use --tile-size"),
    ("id=x", "id is not a model option"),
], ids=["no-equals", "no-name", "scale", "tile-size", "id"])
def test_a_bad_option_is_a_usage_error(capsys, text, words):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["upscale", "a.png", "--option", text])
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_help_is_plain_text():
    text = build_parser().format_help()
    assert "``" not in text and "image-upscaling service" in text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_files_done_on_a_terminal_only():
    screen = Terminal()
    bar = ProgressBar(4, screen)
    bar.start()
    bar.advance(True)
    bar.advance(False)
    bar.finish()
    frames = screen.getvalue().split("\r")
    assert frames[1].startswith("[" + "." * 30 + "] 0/4 files")
    assert frames[-1].startswith("[" + "#" * 15 + "." * 15 + "] 2/4 files, 1 failed")

    pipe = io.StringIO()
    quiet = ProgressBar(2, pipe)
    quiet.start()
    quiet.advance(True)
    quiet.finish()
    assert pipe.getvalue() == ""
