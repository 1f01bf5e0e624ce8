"""The terminal progress board: bars redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
import re

import pytest

from watercolor.progress import ProgressBoard, bar, clock

ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.mark.parametrize(("fraction", "expected"), [
    (0.0, "." * 8), (0.5, "####...."), (1.0, "#" * 8), (1.7, "#" * 8), (-1, "." * 8),
], ids=["empty", "half", "full", "over", "under"])
def test_bar(fraction, expected):
    assert bar(fraction, 8) == expected


@pytest.mark.parametrize(("seconds", "expected"), [(0, "0:00"), (61.4, "1:01"), (3725, "1:02:05")])
def test_clock(seconds, expected):
    assert clock(seconds) == expected


def frames(text: str) -> list[list[str]]:
    """What a terminal shows after each redraw: the block's lines, escapes removed."""
    shown = []
    for chunk in re.split(r"\x1b\[\d+F", text):
        lines = [ESCAPES.sub("", line) for line in chunk.split("\n") if line]
        if lines:
            shown.append(lines)
    return shown


def test_a_terminal_gets_a_bar_per_image_and_one_overall_redrawn_in_place():
    screen = io.StringIO()
    board = ProgressBoard(["astronaut.png", "coffee.jpg"], screen, live=True, columns=100, lines=30)
    board.draw()
    board.update(0, "running", 0.5, (8, 16))
    board.update(1, "queued", 0.0)
    board.set_overall(0.25, 30)
    board.draw()
    board.update(0, "done", 1.0, (16, 16), "-> big.png")
    board.update(1, "failed", 1.0, note="corrupt_image")
    board.set_overall(1.0, None)
    board.finish()

    text = screen.getvalue()
    assert text.count("\x1b[3F") == 2  # two redraws, each moving up over the 3 lines drawn before
    first, middle, last = frames(text)
    assert first[0].startswith("astronaut.png [" + "." * 24 + "]   0%  queued")
    assert middle[0].startswith("astronaut.png [" + "#" * 12 + "." * 12 + "]  50%  8/16 tiles")
    assert middle[2].startswith("overall") and "25%" in middle[2] and "about 0:30 left" in middle[2]
    assert last[0].endswith("100%  done  -> big.png")
    assert "failed  corrupt_image" in last[1]
    assert last[2].endswith("100%  2 of 2 finished")
    assert "\x1b[32mdone" in text and "\x1b[31mfailed" in text


def test_lines_never_wrap_a_narrow_terminal():
    screen = io.StringIO()
    board = ProgressBoard(["a-very-long-file-name-indeed.png"], screen, live=True, columns=40, lines=10)
    board.update(0, "done", 1.0, note="-> /some/very/long/output/folder/and/name.png")
    board.draw()
    assert all(len(line) < 40 for frame in frames(screen.getvalue()) for line in frame)


def test_many_images_show_the_running_ones_and_a_count_of_the_rest():
    screen = io.StringIO()
    board = ProgressBoard([f"img{i}.png" for i in range(30)], screen, live=True, columns=100, lines=10)
    for i in range(10):
        board.update(i, "done", 1.0)
    board.update(20, "running", 0.3, (3, 10))
    board.draw()
    shown = frames(screen.getvalue())[-1]
    assert len(shown) == 7  # 10 lines less 3 of margin: 5 images, "... and N more", overall
    assert shown[4].startswith("img20.png") and "3/10 tiles" in shown[4]  # running ones always shown
    assert shown[-2] == "... and 25 more (19 queued, 6 done)"


def test_a_pipe_gets_plain_lines_for_starts_quarters_and_ends():
    out = io.StringIO()
    board = ProgressBoard(["a.png", "b.png"], out)  # a StringIO is not a terminal
    board.update(0, "queued", 0.0)
    board.update(0, "running", 0.0)
    for done in range(1, 11):
        board.update(0, "running", done / 10, (done, 10))
    board.update(0, "done", 1.0, note="-> a_x2.png")
    board.update(1, "failed", 1.0, note="corrupt_image")
    board.draw()
    board.finish()
    assert out.getvalue().splitlines() == [
        "a.png: running", "a.png: 25% (3/10 tiles)", "a.png: 50% (5/10 tiles)",
        "a.png: 75% (8/10 tiles)", "a.png: 100% (10/10 tiles)", "a.png: done (-> a_x2.png)",
        "overall: 1 of 2 images finished", "b.png: failed (corrupt_image)",
        "overall: 2 of 2 images finished",
    ]
    assert "\x1b" not in out.getvalue()
