"""Xid events from a host's kernel log: the NVIDIA driver's `NVRM: Xid (PCI:...): N, ...` lines.

The lines come from `journalctl -k -o short-iso` or, where the journal cannot answer,
`dmesg --time-format iso` (kernel_log_command); the parser also reads the other shapes operators
paste: `dmesg -T` ("[Tue Nov 28 10:01:02 2023] NVRM: ..."), plain dmesg ("[  179.437933] NVRM:
..."), syslog/journalctl short ("Feb 15 17:37:45 host kernel: [82659.75] NVRM: ...") and
`dmesg --decode` ("kern  :warn  : 2025-01-21T04:41:44,283302+00:00 NVRM: ..."). Kernel text is
untrusted: anything that is not an Xid line is skipped, nothing raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from .xid_catalog import XID_CATALOG

_XID = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<pci>[0-9A-Fa-f]{1,8}(?::[0-9A-Fa-f]{1,4}){1,3}(?:\.[0-9A-Fa-f])?)\)"
    r":\s*(?P<xid>[0-9]{1,5})(?:,\s*(?P<detail>.*))?$"
)
_TIMES = (
    # journalctl -o short-iso (+0200, or +02:00 since systemd PR #29134), dmesg --time-format iso
    re.compile(r"(?P<time>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]{1,9})?"
               r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?)\s"),
    # dmesg -T / --ctime
    re.compile(r"\[(?P<time>[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4})\]"),
    # syslog and journalctl's default short format
    re.compile(r"^(?P<time>[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2})\s"),
)
_MAX_LINE = 4096  # longer lines are cut before matching


@dataclass(frozen=True)
class XidEvent:
    time: str | None  # wall-clock time as the log printed it; None for uptime-only lines
    pci: str  # "0000:01:00", as the driver printed it
    xid: int
    detail: str  # the rest of the line: "pid=1234, GPU has fallen off the bus."
    meaning: str  # NVIDIA's description, or an "unknown Xid" note
    fatal: bool  # fails a canary (rig/gpu/xid_catalog.py)


def _time(prefix: str) -> str | None:
    for pattern in _TIMES:
        match = pattern.search(prefix)
        if match:
            return match.group("time")
    return None


def parse_line(line: str) -> XidEvent | None:
    """The Xid event of one kernel log line; None for any other line."""
    line = line[:_MAX_LINE].rstrip("\r\n")
    start = line.find("NVRM: Xid (")
    if start < 0:
        return None
    match = _XID.match(line, start)
    if not match:
        return None
    number = int(match.group("xid"))
    known = XID_CATALOG.get(number)
    if known:
        meaning, fatal = known.meaning, known.fatal
    else:
        meaning, fatal = f"Xid {number} is not in rig's catalog (see NVIDIA's Xid catalog)", False
    return XidEvent(
        time=_time(line[:start]),
        pci=match.group("pci"),
        xid=number,
        detail=(match.group("detail") or "").strip(),
        meaning=meaning,
        fatal=fatal,
    )


def parse_kernel_lines(text: str) -> list[XidEvent]:
    """Every Xid event in kernel log text, in order; other lines (other NVRM messages too) are
    skipped. Never raises on any str."""
    if not isinstance(text, str):
        return []
    events = []
    for line in text.splitlines():
        event = parse_line(line)
        if event is not None:
            events.append(event)
    return events


def epoch_of(time: str | None) -> float | None:
    """An event's time as Unix seconds, when it is an ISO 8601 time with its offset (what
    kernel_log_command asks journalctl and dmesg for); None otherwise."""
    if not time or not re.search(r"(Z|[+-][0-9]{2}:?[0-9]{2})$", time):
        return None
    try:
        return datetime.fromisoformat(time.replace(",", ".")).timestamp()
    except ValueError:
        return None


def since(events: list[XidEvent], epoch: float) -> list[XidEvent]:
    """The events at or after `epoch`. The dmesg fallback prints the whole ring buffer since
    boot, so times are compared here; an event whose time cannot be read is kept (a GPU error
    is not dropped for its format)."""
    return [e for e in events if (at := epoch_of(e.time)) is None or at >= epoch]
