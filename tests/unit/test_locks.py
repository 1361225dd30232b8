"""The rollout lock: the lock script run for real by sh on a temporary folder (flock, sha256sum,
base64 as on a host), the rules of who may take a lock, and HostLocks against the fake fleet:
compare-and-swap take-overs, racing takers, a broken lock noticed by its old holder, malformed
files."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from rig.commands import lock as cmd
from rig.commands.lock import LOCK_FILE, STATE_DIR
from rig.rollout.locks import HostLocks, describe_lock, liveness, may_take
from tasks.rollout import parse_rollout_facts

from .fakes import FakeSession


# -- the script, run by sh ----------------------------------------------------------------------
@pytest.fixture
def host_dir(tmp_path):
    """Run a lock command as a host would, with /var/lib/rig moved to a temporary folder."""
    def run(command) -> str:
        line = str(command).replace(STATE_DIR, str(tmp_path))
        done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout
    run.lock = tmp_path / "rollout.lock"
    return run


def holder(name: str, **more) -> dict:
    return {"id": f"{name}-1", "operator": name, "heartbeat": time.time(), **more}


def test_take_creates_once_then_says_who_holds_it(host_dir):
    assert host_dir(cmd.take(holder("ana"))) == "TAKEN\n"
    word, sha, lock, raw = cmd.parse_answer(host_dir(cmd.take(holder("bo"))))
    assert (word, lock["id"]) == ("HELD", "ana-1")
    assert sha == cmd.digest(host_dir.lock.read_bytes()) and raw == host_dir.lock.read_bytes()


def test_a_take_over_is_a_compare_and_swap_on_the_file_seen(host_dir):
    host_dir(cmd.take(holder("ana")))
    seen = cmd.digest(host_dir.lock.read_bytes())
    assert host_dir(cmd.take(holder("bo"), expect="0" * 64)).startswith("HELD ")  # stale view
    assert host_dir(cmd.take(holder("bo"), expect=seen)) == "TAKEN\n"
    assert json.loads(host_dir.lock.read_text())["id"] == "bo-1"
    # a second taker who saw ana's lock too is refused: the file is no longer what it saw
    word, _, lock, _ = cmd.parse_answer(host_dir(cmd.take(holder("cy"), expect=seen)))
    assert (word, lock["id"]) == ("HELD", "bo-1")


def test_of_racing_take_overs_exactly_one_wins(host_dir):
    host_dir(cmd.take(holder("paused", paused=True)))
    seen = cmd.digest(host_dir.lock.read_bytes())
    answers = []
    takers = [threading.Thread(target=lambda n=n: answers.append(
        (n, host_dir(cmd.take(holder(n), expect=seen))))) for n in ("p1", "p2", "p3", "p4")]
    for t in takers:
        t.start()
    for t in takers:
        t.join()
    winners = [n for n, a in answers if a == "TAKEN\n"]
    assert len(winners) == 1
    assert json.loads(host_dir.lock.read_text())["id"] == f"{winners[0]}-1"


def test_refresh_and_release_touch_only_our_own_lock(host_dir):
    ana = holder("Zoë ops [ci]")
    host_dir(cmd.take(ana))
    assert host_dir(cmd.refresh({**ana, "heartbeat": 5})) == "OURS\n"
    assert json.loads(host_dir.lock.read_text())["heartbeat"] == 5
    word, _, lock, _ = cmd.parse_answer(host_dir(cmd.release("Zoë ops [ci]-2")))
    assert word == "GONE" and lock["id"] == "Zoë ops [ci]-1"
    assert cmd.parse_answer(host_dir(cmd.refresh(holder("bo"))))[0] == "GONE"
    assert host_dir(cmd.release(ana["id"])) == "RELEASED\n" and not host_dir.lock.exists()
    # run again (its answer lost with a dropped connection): there is none, and it says so
    assert host_dir(cmd.release(ana["id"])) == "FREE\n"
    host_dir.lock.symlink_to("/nonexistent")     # a dangling link is something, not nothing
    assert host_dir(cmd.release(ana["id"])).startswith("GONE notfile")


def test_remove_takes_exactly_the_lock_that_was_read(host_dir):
    host_dir.lock.write_text("")          # an empty file: malformed, still a lock
    seen = cmd.digest(b"")
    host_dir(cmd.take(holder("ana"), expect=seen))  # someone took it over since
    assert host_dir(cmd.remove(seen)).startswith("HELD ")
    assert host_dir(cmd.remove(cmd.digest(host_dir.lock.read_bytes()))) == "REMOVED\n"
    assert host_dir(cmd.remove(seen)) == "FREE\n"


def test_the_fact_reads_the_lock_with_its_sha_and_malformed_files(host_dir):
    from rig.commands.container import rollout_state_command

    def fact():
        out = host_dir(rollout_state_command())
        return parse_rollout_facts(out.splitlines())
    assert fact().lock is None
    for text, why in (("", "empty"), ("[1, 2]", "a JSON list, not an object"),
                      ("{torn", "not JSON: '{torn'")):
        host_dir.lock.write_text(text)
        facts = fact()
        assert facts.lock == {"malformed": why}
        assert facts.lock_sha == cmd.digest(text.encode())
    host_dir.lock.write_text(json.dumps(holder("ana")))
    assert fact().lock["id"] == "ana-1"
    host_dir.lock.write_bytes(bytes(range(256)) * 4)             # binary: no traceback
    assert fact().lock == {"malformed": "not text (binary)"}
    host_dir.lock.write_bytes(b"a" * (cmd.MAX_LOCK + 10))       # huge: read no further
    assert fact().lock == {"malformed": "larger than 64 KiB"}
    host_dir.lock.unlink()
    host_dir.lock.symlink_to("/dev/zero")                        # would never end if read
    facts = fact()
    assert facts.lock["malformed"].startswith("not a regular file") and facts.lock_sha == "notfile"


def test_a_state_file_without_a_last_newline_does_not_hide_the_lock(host_dir):
    """A state.json cut short (or written by hand with printf) ends without a newline: the
    section marker after it must still start a line, or the lock section is lost."""
    from rig.commands.container import rollout_state_command

    (host_dir.lock.parent / "state.json").write_bytes(b"{{not json")
    host_dir.lock.write_text(json.dumps(holder("ana")))
    facts = parse_rollout_facts(host_dir(rollout_state_command()).splitlines())
    assert facts.lock["id"] == "ana-1" and facts.state_rebuilt
    assert "--- lock" not in facts.warnings[0]


def test_a_lock_that_is_no_regular_file_is_named_and_can_be_broken_or_removed(host_dir):
    host_dir.lock.symlink_to("/dev/zero")
    word, sha, lock, _ = cmd.parse_answer(host_dir(cmd.take(holder("ana"))))
    assert (word, sha) == ("HELD", "notfile") and lock["malformed"].startswith("not a regular")
    assert host_dir(cmd.take(holder("ana"), expect="notfile")) == "TAKEN\n"
    assert json.loads(host_dir.lock.read_text())["id"] == "ana-1" and not host_dir.lock.is_symlink()
    host_dir.lock.unlink()
    host_dir.lock.symlink_to("/dev/zero")
    assert host_dir(cmd.remove("notfile")) == "REMOVED\n" and not host_dir.lock.is_symlink()


# -- rules ---------------------------------------------------------------------------------------
NOW = 1_800_000_000


@pytest.mark.parametrize("lock,break_lock,force,adopt,allowed", [
    (None, False, False, None, True),
    ({"id": "a", "heartbeat": NOW - 10}, False, False, None, False),          # live
    ({"id": "a", "heartbeat": NOW - 10}, True, False, None, False),           # live: refused
    ({"id": "a", "heartbeat": NOW - 10}, True, True, None, True),             # --force
    ({"id": "a", "heartbeat": NOW - 7200}, True, False, None, True),          # stale
    ({"id": "a", "heartbeat": NOW - 7200}, False, False, None, False),
    ({"id": "a", "heartbeat": NOW, "machine": "here", "pid": 4}, True, False, None, True),  # dead
    ({"malformed": "empty"}, True, False, None, True),
    ({"malformed": "empty"}, False, False, None, False),
    ({"id": "a", "paused": True}, True, False, None, False),                  # paused: promote
    ({"id": "a", "paused": True}, True, True, None, True),
    ({"id": "a", "paused": True}, False, False, "a", True),                   # adopt it
    ({"id": "a", "paused": True}, False, False, "b", False),                  # another one
    ({"id": "a", "heartbeat": NOW}, False, False, "a", False),                # not paused
    (None, False, False, "a", False),                                         # gone
])
def test_who_may_take_a_lock(lock, break_lock, force, adopt, allowed):
    why = may_take(lock, 3600, NOW, break_lock, force, adopt, machine="here",
                   alive=lambda pid: False)
    assert (why is None) is allowed, why


def test_describe_lock_names_holder_liveness_and_what_break_lock_does():
    lock = {"operator": "ana@ctl", "since": 1_700_000_000, "action": "rollout", "tag": "T2",
            "pid": 42, "machine": "ctl", "heartbeat": 1_700_000_000}
    live = describe_lock(lock, 3600, 1_700_000_060, machine="other")
    assert live == ("locked by ana@ctl since 2023-11-14 22:13:20 UTC (rollout T2, pid 42 on ctl); "
                    "alive (heartbeat 60 s ago): wait for it, or --break-lock --force if you know "
                    "it is dead")
    assert describe_lock(lock, 3600, 1_700_000_000 + 7200, machine="other").endswith(
        "; stale (no heartbeat for 2.0 h): --break-lock removes it")
    assert describe_lock(lock, 3600, 1_700_000_060, machine="ctl", alive=lambda p: False).endswith(
        "; holder pid 42 on this machine is not running: --break-lock is safe")
    assert liveness(lock, 3600, 1_700_000_060, machine="ctl", alive=lambda p: True) == "live"
    assert describe_lock({"malformed": "empty"}, 3600, 0) == (
        f"malformed lock file {LOCK_FILE} (empty): --break-lock removes it")
    assert liveness({"id": "x", "heartbeat": "soon"}, 3600, 0) == "stale"


# -- HostLocks against the fake fleet -------------------------------------------------------------
HOSTS = ["mainpc", "pc2", "node3"]


def three(fleet):
    hosts = {"mainpc": fleet.hosts["mainpc"], "pc2": fleet.hosts["pc2"], "node3": fleet.hosts["pc2"]}
    return fleet.model_copy(update={"hosts": hosts})


def paused_fleet(fleet, rollout_id="ops-7"):
    session = FakeSession(three(fleet), HOSTS)
    for h in HOSTS:
        session.lock_files[h] = json.dumps({"id": rollout_id, "paused": True, "tag": "T2",
                                            "operator": "ops"}).encode()
    return session


def test_two_promotes_racing_one_wins_the_other_is_told_who(fleet):
    session = paused_fleet(fleet)
    first, second = (HostLocks(session, 3600, "rollout", "T2") for _ in range(2))
    assert first.take(adopt="ops-7") == []
    problems = second.take(adopt="ops-7")
    assert len(problems) == 1 and problems[0].startswith("mainpc: locked by another rollout: ")
    assert first.holder["operator"] in problems[0]
    assert {h: session.lock(h)["id"] for h in HOSTS} == {h: first.holder["id"] for h in HOSTS}


def test_a_take_over_that_fails_part_way_puts_the_paused_locks_back(fleet):
    session = paused_fleet(fleet)
    session.lock_files["pc2"] = json.dumps({"id": "other", "heartbeat": time.time()}).encode()
    locks = HostLocks(session, 3600, "rollout", "T2")
    problems = locks.take(adopt="ops-7")
    assert len(problems) == 1 and problems[0].startswith("pc2: locked by another rollout")
    assert {h: session.lock(h)["id"] for h in HOSTS} == {"mainpc": "ops-7", "pc2": "other",
                                                         "node3": "ops-7"}
    assert locks.locked == []


def test_break_lock_refuses_a_live_holder_takes_a_dead_one_and_force_takes_any(fleet):
    session = FakeSession(three(fleet), HOSTS)
    live = {"id": "bo-1", "operator": "bo", "heartbeat": time.time(), "machine": "elsewhere"}
    session.lock_files["pc2"] = json.dumps(live).encode()
    locks = HostLocks(session, 3600, "rollout", "T2")
    [problem] = locks.take(break_lock=True)
    assert "its heartbeat is fresh, so --break-lock refuses" in problem and "bo" in problem
    assert session.lock("pc2")["id"] == "bo-1" and session.locks == {"pc2"}
    assert locks.take(break_lock=True, force=True) == []
    assert {session.lock(h)["id"] for h in HOSTS} == {locks.holder["id"]}
    session.lock_files["node3"] = b"[]"       # malformed: breakable without --force
    other = HostLocks(session, 3600, "rollout", "T3")
    locks.release()
    assert session.locks == {"node3"}
    assert other.take(break_lock=True) == []


def test_a_holder_whose_lock_was_forced_away_notices_at_its_heartbeat_and_release(fleet):
    session = FakeSession(three(fleet), HOSTS)
    mine = HostLocks(session, 3600, "rollout", "T2")
    assert mine.take() == []
    thief = HostLocks(session, 3600, "rollout", "T3")
    assert thief.take(break_lock=True, force=True) == []
    assert mine.heartbeat() == sorted(HOSTS)
    assert set(mine.lost) == set(HOSTS) and "rollout T3" in mine.lost["pc2"]
    assert mine.release() == [] and {session.lock(h)["id"] for h in HOSTS} == {thief.holder["id"]}


def test_the_heartbeat_runs_in_the_background_until_release(fleet, monkeypatch):
    import gevent

    session = FakeSession(three(fleet), HOSTS)
    locks = HostLocks(session, 3600, "rollout", "T2")
    monkeypatch.setattr(HostLocks, "beat_every", property(lambda self: 0.01))
    assert locks.take() == []
    before = session.lock("mainpc")["heartbeat"]
    locks.start_beating()
    gevent.sleep(0.05)
    assert session.lock("mainpc")["heartbeat"] > before
    locks.release()
    refreshes = sum(" refresh " in c for _, c, _ in session.commands)
    gevent.sleep(0.05)
    assert sum(" refresh " in c for _, c, _ in session.commands) == refreshes and not session.locks


def test_an_operator_name_is_one_printable_line(monkeypatch):
    from rig.ledger import operator

    monkeypatch.setenv("RIG_OPERATOR", "ana\nfake line\x1b[2J" + "x" * 200)
    name = operator()
    assert name.startswith("ana?fake line?[2J") and len(name) == 120 and name.isprintable()
