"""Long gates you can watch: while gates and pauses run (minutes, for a model that loads), each
host and service with its elapsed time against its deadline and the last answer, and each GPU
host's card memory (used of total, read with the gate's Xid check every few seconds).

On a terminal a live table (rich) redraws in place; elsewhere (CI, a log file) a plain
timestamped line per host and service whenever its answer changes, and every `every` seconds
while it does not, once a gate has run that long (a gate of a few seconds stays quiet). Fed by
the gate loop's probes (rollout/probing.py on_probe)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from .gate import describe


@dataclass
class Row:
    answer: str = "waiting for the first probe"
    seconds: float = 0.0
    deadline: float = 0.0
    said_at: float = float("-inf")


class GateWatch:
    """with GateWatch(say, deadlines) as watch: gate(..., on_probe=watch.probe)."""

    def __init__(self, say: Callable[[str], None], deadlines: dict[tuple[str, str], float],
                 live: bool | None = None, every: float = 15.0, clock=time.monotonic):
        self.say, self.every, self.clock = say, every, clock
        self.rows = {key: Row(deadline=d) for key, d in deadlines.items()}
        self.live = sys.stdout.isatty() if live is None else live
        self._live = None
        self.memory: dict[str, str] = {}   # host -> "18200/24564 MiB" (each card, comma-joined)

    def __enter__(self) -> GateWatch:
        if self.live and self.rows:
            from rich.live import Live

            # redrawn on each probe, by the gate itself: no refresh thread of its own
            self._live = Live(self._table(), auto_refresh=False, transient=True)
            self._draw(self._live.__enter__)
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            try:
                live.__exit__(*exc)
            except OSError:
                pass

    def _draw(self, action, *args) -> None:
        """The display must never stop a gate: a terminal that went away ends the live table
        (and a plain line that cannot be written is dropped)."""
        try:
            action(*args)
        except OSError:
            self._live = None

    def _redraw(self) -> None:
        self._live.update(self._table(), refresh=True)

    def _say(self, line: str) -> None:
        try:
            self.say(line)
        except OSError:
            pass

    def probe(self, host: str, service: str, probe) -> None:
        row = self.rows.setdefault((host, service), Row())
        answer = describe(probe) if probe.state == "running" else f"container {probe.state}"
        changed = answer != row.answer
        row.answer, row.seconds = answer, probe.t
        if self._live is not None:
            self._draw(self._redraw)
        elif probe.t >= self.every and (changed or self.clock() - row.said_at >= self.every):
            row.said_at = self.clock()
            self._say(f"{time.strftime('%H:%M:%S')} {host:<10} {service}: {self._line(host, row)}")

    def gpu(self, host: str, cards: list[tuple[int, int]]) -> None:
        """A GPU host's cards: [(used MiB, total MiB)]; shown next to each of its services."""
        self.memory[host] = ", ".join(f"{used}/{total} MiB" for used, total in cards)
        if self._live is not None:
            self._draw(self._redraw)

    def _line(self, host: str, row: Row) -> str:
        gpu = f", GPU memory {self.memory[host]}" if host in self.memory else ""
        return f"{row.answer[:60]} ({row.seconds:.0f} s of {row.deadline:.0f} s{gpu})"

    def _table(self):
        from rich.table import Table

        table = Table("host", "service", "elapsed", "last answer", "GPU memory", box=None)
        for (host, service), row in sorted(self.rows.items()):
            table.add_row(host, service, f"{row.seconds:.0f} s of {row.deadline:.0f} s",
                          row.answer[:60], self.memory.get(host, ""))
        return table
