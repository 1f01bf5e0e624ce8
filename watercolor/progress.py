"""Live progress of a batch of images in a terminal: a bar per image and one overall.

On a terminal the block of bars is redrawn in place with plain ANSI escapes
(cursor up, clear line; colour only for the states). When the output is not
a terminal (a pipe, a CI log) each change worth telling becomes one plain
line instead: an image starting, each quarter of its progress, its end, and
the overall count whenever an image ends. No dependency beyond the standard
library.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TextIO

CLEAR_LINE = "\x1b[2K"
COLOURS = {"done": "\x1b[32m", "failed": "\x1b[31m", "cancelled": "\x1b[33m", "running": "\x1b[36m"}
RESET = "\x1b[0m"
FINISHED = ("done", "failed", "cancelled")


@dataclass
class Row:
    name: str
    state: str = "queued"
    fraction: float = 0.0
    tiles_done: int = 0
    tiles_total: int = 0
    note: str = ""


def bar(fraction: float, width: int) -> str:
    filled = int(width * min(1.0, max(0.0, fraction)))
    return "#" * filled + "." * (width - filled)


def clock(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    s = max(0, round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBoard:
    """Bars for ``names``; call :meth:`update` per image, :meth:`draw` to show, :meth:`finish` at the end."""

    BAR_WIDTH = 24

    def __init__(self, names: list[str], stream: TextIO, *, live: bool | None = None,
                 columns: int | None = None, lines: int | None = None) -> None:
        self.rows = [Row(name) for name in names]
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        size = shutil.get_terminal_size((100, 30))
        self.columns = columns or size.columns
        self.max_rows = max(3, min(20, (lines or size.lines) - 3))
        self.overall = 0.0
        self.eta: float | None = None
        self._drawn = 0
        self._told: dict[int, tuple[str, int]] = {}
        self._finished_told = 0

    # --- news -------------------------------------------------------------------------------

    def update(self, index: int, state: str, fraction: float, tiles: tuple[int, int] = (0, 0),
               note: str = "") -> None:
        row = self.rows[index]
        row.state, row.fraction, row.note = state, 1.0 if state in FINISHED else fraction, note
        row.tiles_done, row.tiles_total = tiles
        if not self.live:
            self._tell(index)

    def set_overall(self, fraction: float, eta: float | None) -> None:
        self.overall, self.eta = fraction, eta

    # --- a terminal -------------------------------------------------------------------------

    def draw(self) -> None:
        if not self.live:
            return
        lines = self._lines()
        out = [f"\x1b[{self._drawn}F"] if self._drawn else []
        out += [f"{CLEAR_LINE}{line}\n" for line in lines]
        if self._drawn > len(lines):  # fewer lines than last time: clear what is left below
            out += [f"{CLEAR_LINE}\n"] * (self._drawn - len(lines))
            out.append(f"\x1b[{self._drawn - len(lines)}F")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)

    def _lines(self) -> list[str]:
        name_width = max(8, min(28, max(len(r.name) for r in self.rows), self.columns // 3))
        bar_width = max(10, min(self.BAR_WIDTH, self.columns - name_width - 30))
        shown = self._rows_shown()
        lines = [self._row_line(self.rows[i], name_width, bar_width) for i in shown]
        hidden = len(self.rows) - len(shown)
        if hidden:
            states = [r.state for i, r in enumerate(self.rows) if i not in set(shown)]
            counts = ", ".join(f"{states.count(s)} {s}" for s in ("running", "queued", *FINISHED)
                               if states.count(s))
            lines.append(f"... and {hidden} more ({counts})"[: self.columns - 1])
        if len(self.rows) > 1 or hidden:
            done = sum(1 for r in self.rows if r.state in FINISHED)
            detail = f"{done} of {len(self.rows)} finished"
            if self.eta is not None and done < len(self.rows):
                detail += f", about {clock(self.eta)} left"
            label = "overall"[:name_width]
            line = f"{label:<{name_width}} [{bar(self.overall, bar_width)}] " \
                f"{round(self.overall * 100):>3}%  {detail}"
            lines.append(line[: self.columns - 1])
        return lines

    def _rows_shown(self) -> list[int]:
        if len(self.rows) <= self.max_rows:
            return list(range(len(self.rows)))
        budget = self.max_rows - 2
        order = sorted(range(len(self.rows)), key=lambda i: (
            {"running": 0, "queued": 2}.get(self.rows[i].state, 1), i))
        return sorted(order[:budget])

    def _row_line(self, row: Row, name_width: int, bar_width: int) -> str:
        name = row.name if len(row.name) <= name_width else row.name[: name_width - 1] + "~"
        detail = row.state
        if row.state == "running":
            detail = f"{row.tiles_done}/{row.tiles_total} tiles" if row.tiles_total else "waiting"
        if row.note:
            detail += f"  {row.note}"
        head = f"{name:<{name_width}} [{bar(row.fraction, bar_width)}] {round(row.fraction * 100):>3}%  "
        room = max(0, self.columns - 1 - len(head))
        if len(detail) > room:
            detail = detail[: max(0, room - 1)] + "~"
        colour = COLOURS.get(row.state, "")
        return head + (f"{colour}{detail}{RESET}" if colour else detail)

    # --- a pipe or a log --------------------------------------------------------------------

    def _tell(self, index: int) -> None:
        row = self.rows[index]
        quarter = int(row.fraction * 4) if row.state == "running" else 0
        told = self._told.get(index)
        if told == (row.state, quarter):
            return
        self._told[index] = (row.state, quarter)
        if row.state == "queued":
            return
        if row.state == "running" and told is not None and told[0] == "running":
            tiles = f" ({row.tiles_done}/{row.tiles_total} tiles)" if row.tiles_total else ""
            self._say(f"{row.name}: {quarter * 25}%{tiles}")
        else:
            self._say(f"{row.name}: {row.state}" + (f" ({row.note})" if row.note else ""))
        finished = sum(1 for r in self.rows if r.state in FINISHED)
        if row.state in FINISHED and finished != self._finished_told and len(self.rows) > 1:
            self._finished_told = finished
            self._say(f"overall: {finished} of {len(self.rows)} images finished")

    def _say(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    # --- the end ----------------------------------------------------------------------------

    def finish(self) -> None:
        self.draw()
