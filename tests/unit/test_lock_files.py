"""A lock path that is a directory (or a symlink to one), run by sh as on a host: the lock is
never put inside it, so no taker is told TAKEN and concurrent --break-lock runs cannot all win;
`rig lock release` fails and says what to do instead of claiming success."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from rig.commands import lock as cmd
from rig.commands.lock import STATE_DIR


@pytest.fixture
def host(tmp_path):
    """Run a lock command as a host would, /var/lib/rig moved to a temporary folder; the
    whole answer (exit code, stdout, stderr), failures included."""
    def run(command) -> subprocess.CompletedProcess:
        line = str(command).replace(STATE_DIR, str(tmp_path))
        return subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
    run.lock = tmp_path / "rollout.lock"
    return run


def holder(name: str) -> dict:
    return {"id": f"{name}-1", "operator": name, "heartbeat": time.time()}


def test_a_directory_is_held_and_never_taken_over(host):
    host.lock.mkdir()
    word, sha, lock, _ = cmd.parse_answer(host(cmd.take(holder("ana"))).stdout)
    assert (word, sha) == ("HELD", cmd.NOT_A_FILE) and lock["malformed"].startswith("not a regular")
    done = host(cmd.take(holder("ana"), expect=cmd.NOT_A_FILE))   # --break-lock
    assert done.returncode != 0 and "TAKEN" not in done.stdout
    assert "is a directory" in done.stderr.splitlines()[-1]
    assert "remove it by hand" in done.stderr.splitlines()[-1]
    assert host.lock.is_dir() and list(host.lock.iterdir()) == []
    assert not host.lock.with_name("rollout.lock.new").exists()


def test_racing_break_locks_on_a_directory_none_is_taken(host):
    host.lock.mkdir()
    answers = []
    takers = [threading.Thread(target=lambda n=n: answers.append(
        host(cmd.take(holder(n), expect=cmd.NOT_A_FILE)).stdout)) for n in ("p1", "p2", "p3")]
    for t in takers:
        t.start()
    for t in takers:
        t.join()
    assert len(answers) == 3 and not [a for a in answers if "TAKEN" in a]


def test_a_symlink_to_a_directory_is_replaced_not_written_through(host, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    host.lock.symlink_to(elsewhere)
    assert host(cmd.take(holder("ana"), expect=cmd.NOT_A_FILE)).stdout == "TAKEN\n"
    assert not host.lock.is_symlink() and json.loads(host.lock.read_text())["id"] == "ana-1"
    assert list(elsewhere.iterdir()) == []


def test_removing_a_directory_fails_and_says_what_to_do(host):
    host.lock.mkdir()
    done = host(cmd.remove(cmd.NOT_A_FILE))
    assert done.returncode != 0 and "REMOVED" not in done.stdout
    last = done.stderr.splitlines()[-1]
    assert "is not a regular file" in last and "remove it by hand" in last
    assert host.lock.is_dir()


def test_a_take_over_that_the_host_refuses_says_the_hosts_reason():
    """--break-lock on a lock path that is a directory: HELD notfile (malformed, so it may be
    broken), then the take over fails on the host: its own words, not 'the lock changed'."""
    from rig.rollout.locks import HostLocks
    from tasks.util import Shell

    reason = ("rig: /var/lib/rig/rollout.lock is not a regular file, it is a directory: remove "
              "it by hand (rm -r /var/lib/rig/rollout.lock), then run rig again")

    class Host:
        def __init__(self):
            self.calls = 0

        def names(self):
            return ["mainpc"]

        def shell(self, name, command, stdin=None, timeout=None, retry=False):
            self.calls += 1
            if self.calls == 1:
                return Shell(True, f"HELD {cmd.NOT_A_FILE}\n\n", [])
            return Shell(False, "", ["mv: cannot overwrite directory", reason])

    locks = HostLocks(Host(), 3600, "rollout", "T2")
    assert locks.take(break_lock=True) == [f"mainpc: could not take the lock over: {reason}"]
    assert locks.locked == []
