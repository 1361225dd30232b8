"""`rig lock release` that did not release everywhere: every host's line is printed, the hosts
whose lock may still be there are named, and the command exits 1 (a script or an operator
checking $? must not take it for done)."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

import rig.ops.day2
from rig.cli import main
from rig.ops import day2 as ops_day2

from .fakes import FakeJob
from .test_ops_day2 import LockSession, lock_bytes

REPO = Path(__file__).resolve().parents[2]
STALE = lock_bytes(operator="bo@x", since=1, heartbeat=1, pid=7, machine="elsewhere")


def newer() -> bytes:
    now = time.time()
    return lock_bytes(operator="zoe@y", since=now, heartbeat=now, pid=9, machine="m2")


def test_lock_release_names_the_hosts_it_did_not_release(fleet):
    session = LockSession(fleet, ["mainpc", "pc2"], lock_files={"mainpc": STALE, "pc2": STALE},
                          fail_remove=["pc2"], swap_on_remove={"mainpc": newer()})
    released = ops_day2.lock_release(FakeJob(fleet, session), None, False, print)
    assert released.not_released == ["mainpc", "pc2"]
    silent = LockSession(fleet, ["mainpc", "pc2"], silent=["pc2"], lock_files={"mainpc": STALE})
    released = ops_day2.lock_release(FakeJob(fleet, silent), None, False, print)
    assert released[0] == "pc2: did not answer" and released.not_released == ["pc2"]
    free = LockSession(fleet, ["mainpc", "pc2"], lock_files={"mainpc": STALE})
    released = ops_day2.lock_release(FakeJob(fleet, free), None, False, print)
    assert released == ["pc2: free already", released[1]] and released.not_released == []


def invoke(monkeypatch, fleet, session):
    real = ops_day2.lock_release
    monkeypatch.setattr(rig.ops.day2, "lock_release", lambda job, limit, force, say:
                        real(FakeJob(fleet, session), limit, force, say))
    return CliRunner().invoke(main, ["-c", str(REPO / "fleet.yml"), "--env", "production",
                                     "lock", "release"])


def test_rig_lock_release_exits_1_when_a_host_was_not_released(monkeypatch, fleet):
    session = LockSession(fleet, ["mainpc", "pc2"], lock_files={"mainpc": STALE, "pc2": STALE},
                          fail_remove=["pc2"])
    result = invoke(monkeypatch, fleet, session)
    assert result.exit_code == 1, result.output
    assert "  mainpc: released (locked by bo@x since " in result.output
    assert "  pc2: FAILED: sudo: a password is required" in result.output
    assert "rig: the lock was not released on pc2" in result.output


def test_rig_lock_release_exits_0_when_every_host_is_released_or_free(monkeypatch, fleet):
    session = LockSession(fleet, ["mainpc", "pc2"], lock_files={"mainpc": STALE})
    result = invoke(monkeypatch, fleet, session)
    assert result.exit_code == 0, result.output
    assert "  pc2: free already" in result.output
