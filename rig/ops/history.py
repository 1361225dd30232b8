"""`rig history`: the ledgers of the chosen hosts, merged by time (newest last)."""

from __future__ import annotations

import json

from ..commands.container import ledger_tail
from .job import Job, select_hosts


def merge(ledgers: dict[str, str], service: str | None, limit: int) -> list[dict]:
    """Ledger texts per host -> the last `limit` lines of all of them, in time order. Lines that
    are not JSON objects (a torn write) are skipped."""
    rows = []
    for host, text in ledgers.items():
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and (not service or row.get("service") == service):
                rows.append({**row, **_texts(row), "host": str(row.get("host") or host)})
    rows.sort(key=lambda r: (str(r.get("time", "")), r["host"], str(r.get("service", ""))))
    return rows[-limit:] if limit else rows


TEXT_FIELDS = ("time", "service", "action", "tag", "result", "operator", "reason")


def _texts(row: dict) -> dict:
    """The fields shown as text, as text: a hand-edited or foreign line ({"time": 5}) is shown
    as it is, never a traceback."""
    return {k: json.dumps(row[k]) for k in TEXT_FIELDS
            if k in row and row[k] is not None and not isinstance(row[k], str)}


def history(job: Job, limit_hosts: list[str] | None, service: str | None, limit: int,
            say) -> list[dict]:
    hosts = select_hosts(job.fleet, limit_hosts, [service] if service else None)
    with job.session(hosts) as session:
        # each host's last `limit` lines (of the service's, filtered there) are enough for the
        # merged last `limit`; 0 means all of them
        answers = session.shell_all({h: ledger_tail(limit or 10**9, service) for h in hosts},
                                    timeout=60)
    for host, answer in answers.items():
        if not answer.ok:
            say(f"{host}: could not read the ledger: {' '.join(answer.stderr[-1:])}")
    return merge({h: a.stdout for h, a in answers.items() if a.ok}, service, limit)
