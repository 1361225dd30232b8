"""The lock every mutating command takes on every host it changes (rollout, rollback,
bootstrap): /var/lib/rig/rollout.lock, created with noclobber, naming who holds it, from which
machine and process, since when, with a heartbeat a live holder refreshes."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime

from ..commands import container as cmd
from ..ledger import operator
from ..proc import pid_running


def holder(action: str, tag: str) -> dict:
    who, now = operator(), time.time()
    return {"operator": who, "since": now, "heartbeat": now, "action": action, "tag": tag,
            "pid": os.getpid(), "machine": socket.gethostname(), "id": f"{who}-{time.time_ns()}"}


def describe_lock(lock: dict, stale_after: float, now: float, machine: str | None = None,
                  alive=pid_running) -> str:
    """Who holds it and whether it is alive: a holder on this machine whose pid is gone is dead;
    otherwise a lock whose heartbeat is older than stale_after is stale."""
    since = lock.get("since", 0)
    beat = lock.get("heartbeat", since)
    age = now - beat if isinstance(beat, (int, float)) else 0
    when = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") \
        if isinstance(since, (int, float)) and since else "?"
    text = (f"locked by {lock.get('operator', '?')} since {when} "
            f"({lock.get('action', 'rollout')} {lock.get('tag', '')}, pid {lock.get('pid', '?')})")
    if lock.get("paused"):
        paused = lock.get("paused_since")
        at = datetime.fromtimestamp(paused, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") \
            if isinstance(paused, (int, float)) else "?"
        return (f"paused rollout {lock.get('tag', '?')} by {lock.get('operator', '?')} since {at}, "
                "after its canary: `rig promote` continues it, `rig abort` rolls the canary back")
    machine = machine or socket.gethostname()
    pid = lock.get("pid")
    if lock.get("machine") == machine and isinstance(pid, int) and not alive(pid):
        return text + f"; holder pid {pid} on this machine is not running: --break-lock is safe"
    if age > stale_after:
        return text + f"; stale (no heartbeat for {age / 3600:.1f} h): --break-lock removes it"
    return text + "; wait for it, or --break-lock if that rollout is dead"


class HostLocks:
    """Take, refresh and release the lock on a session's hosts."""

    def __init__(self, session, stale_after: float, action: str, tag: str):
        self.session, self.stale_after = session, stale_after
        self.holder = holder(action, tag)
        self.locked: list[str] = []

    def take(self, break_lock: bool) -> list[str]:
        """Take every host's lock; on any problem release those taken and return the problems."""
        problems = []
        for host in self.session.names():
            if break_lock:
                self.session.shell(host, cmd.lock_break())
            result = self.session.shell(host, cmd.lock_take(self.holder))
            if result.ok and result.stdout.startswith("TAKEN"):
                self.locked.append(host)
            elif not result.ok:
                problems.append(f"{host}: could not take the lock: {' '.join(result.stderr[-2:])}")
            else:
                lock = _held(result.stdout)
                problems.append(f"{host}: {describe_lock(lock, self.stale_after, time.time())}")
        if problems:
            self.release()
        return problems

    def heartbeat(self) -> None:
        """A live holder says so (between waves): an old-but-live lock is never called stale."""
        self.holder["heartbeat"] = time.time()
        for host in self.locked:
            self.session.shell(host, cmd.lock_refresh(self.holder))

    def pause(self, info: dict) -> None:
        """Keep the locks for a paused rollout: rewritten with `info` (paused, the remaining
        waves) and a fresh heartbeat, and no longer released by this process."""
        self.holder.update(info)
        self.heartbeat()
        self.locked = []

    def release(self) -> list[str]:
        """Release every lock taken; returns the hosts where that failed."""
        failed = [h for h in self.locked
                  if not self.session.shell(h, cmd.lock_release(self.holder["id"])).ok]
        self.locked = []
        return failed


def _held(stdout: str) -> dict:
    try:
        value = json.loads(stdout.split("\n", 1)[1]) if "\n" in stdout else {}
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}
