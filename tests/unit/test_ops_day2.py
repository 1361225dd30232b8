"""Day-2 verbs through the ops layer on scripted hosts: logs merged and failures named, exec's
exit codes per host, exec -it's ssh line, lock status and the rules of lock release, prune's
failures, and history."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from rig.commands import container as cmd
from rig.commands import day2
from rig.errors import RigError
from rig.ops import day2 as ops_day2
from rig.ops import history as ops_history
from rig.ops.job import Job
from tasks.util import Shell

from .fakes import FakeJob, FakeSession

REPO = Path(__file__).resolve().parents[2]
SERVICE = "model_ops_coordinator"


class Scripted:
    """A session whose hosts answer shell_all from a script: host -> Shell (or a function of
    the command). Every batch of commands is kept."""

    def __init__(self, answers):
        self.answers, self.batches, self.timeouts = answers, [], []

    def shell_all(self, commands, timeout=None):
        self.batches.append({h: str(c) for h, c in commands.items()})
        self.timeouts.append(timeout)
        out = {}
        for host, command in commands.items():
            answer = self.answers[host]
            out[host] = answer(str(command)) if callable(answer) else answer
        return out


def scripted_job(fleet, session, opened=None):
    @contextmanager
    def open_session(hosts, say=None):
        if opened is not None:
            opened.append(list(hosts))
        yield session
    return SimpleNamespace(fleet=fleet, session=open_session)


# -- logs -----------------------------------------------------------------------------------------
def test_logs_asks_every_host_of_the_service_and_merges_by_time(fleet):
    session = Scripted({
        "mainpc": Shell(True, "2026-11-24T10:00:02.000000000Z b\n  continued\n", []),
        "pc2": Shell(True, "2026-11-24T10:00:01.000000000Z a\n", [])})
    opened, said = [], []
    lines = ops_day2.logs(scripted_job(fleet, session, opened), SERVICE, None, "10m", 50,
                          said.append)
    command = day2.logs_command(SERVICE, "10m", 50).line
    assert session.batches == [{"mainpc": command, "pc2": command}] and session.timeouts == [120]
    assert command == f"docker logs --timestamps --since 10m --tail 50 rig-{SERVICE} 2>&1"
    assert [(x.host, x.text) for x in lines] == [("pc2", "a"), ("mainpc", "b"),
                                                 ("mainpc", "  continued")]
    assert opened == [["mainpc", "pc2"]] and said == []


def test_a_host_without_logs_is_named_and_the_others_shown(fleet):
    session = Scripted({
        "mainpc": Shell(False, "", ["Error: No such container: rig-x"]),
        "pc2": Shell(False, "some output\n", []),
    })
    said = []
    assert ops_day2.logs(scripted_job(fleet, session), SERVICE, ["mainpc", "pc2"], None, None,
                         said.append) == []
    assert said == ["mainpc: no logs: Error: No such container: rig-x", "pc2: no logs: some output"]


def test_a_bad_since_is_refused_before_any_host_is_asked(fleet):
    session = Scripted({})
    with pytest.raises(RigError, match=r"^--since '1 day': expected a duration such as 30s, "
                                       "10m or 2h$"):
        ops_day2.logs(scripted_job(fleet, session), SERVICE, None, "1 day", None, print)
    assert session.batches == []


# -- exec -----------------------------------------------------------------------------------------
def test_exec_gives_each_hosts_output_and_exit_code(fleet):
    session = Scripted({
        "mainpc": Shell(True, "hello\nrig-exit-code:0\n", []),
        "pc2": Shell(False, "no such file\nrig-exit-code:2\n", []),
    })
    results = ops_day2.exec_in(scripted_job(fleet, session), SERVICE, None, ["ls", "/x y"])
    assert session.batches[0]["mainpc"] == (
        f"docker exec -u 10001:10001 rig-{SERVICE} ls '/x y' 2>&1; echo \"rig-exit-code:$?\"")
    assert session.timeouts == [600]
    assert [(r.host, r.code, r.output) for r in results] == [("mainpc", 0, "hello"),
                                                             ("pc2", 2, "no such file")]


def test_exec_on_a_host_that_did_not_run_it_shows_the_connection_error(fleet):
    session = Scripted({
        "mainpc": Shell(False, "", ["a", "b", "c", "ssh: connect to host: No route to host"]),
        "pc2": Shell(True, "partial output without a mark", []),
    })
    results = ops_day2.exec_in(scripted_job(fleet, session), SERVICE, None, ["true"])
    assert [(r.host, r.code, r.output) for r in results] == [
        ("mainpc", 255, "b\nc\nssh: connect to host: No route to host"),
        ("pc2", 255, "partial output without a mark")]


def production_job(monkeypatch, mainpc="ops@10.0.0.1:2222") -> Job:
    monkeypatch.setenv("RIG_HOST_MAINPC", mainpc)
    monkeypatch.setenv("RIG_HOST_PC2", "root@10.0.0.2")
    monkeypatch.setenv("RIG_KNOWN_HOSTS", "/k/known_hosts")
    monkeypatch.delenv("RIG_SSH_KEY", raising=False)
    return Job(REPO / "fleet.yml", "production")


def test_exec_interactive_is_one_ssh_t_line_with_sudo_for_a_non_root_user(monkeypatch):
    calls = []
    monkeypatch.setattr(ops_day2.subprocess, "call", lambda argv: calls.append(argv) or 7)
    job = production_job(monkeypatch)
    assert ops_day2.exec_interactive(job, SERVICE, ["mainpc"], ["sh"]) == 7
    assert calls == [["ssh", "-t", "-p", "2222", "-o", "StrictHostKeyChecking=yes", "-o",
                      "UserKnownHostsFile=/k/known_hosts", "ops@10.0.0.1",
                      f"sudo -H -n sh -c 'docker exec -it -u 10001:10001 rig-{SERVICE} sh'"]]
    calls.clear()
    ops_day2.exec_interactive(job, SERVICE, ["pc2"], ["bash", "-l"])
    assert calls[0][-2:] == ["root@10.0.0.2", f"docker exec -it -u 10001:10001 rig-{SERVICE} "
                                              "bash -l"]


def test_exec_interactive_needs_exactly_one_host(monkeypatch):
    monkeypatch.setattr(ops_day2.subprocess, "call", lambda argv: pytest.fail("ran ssh"))
    with pytest.raises(RigError, match=rf"^-it needs exactly one host; {SERVICE} runs on "
                                       r"mainpc, pc2 \(add --host\)$"):
        ops_day2.exec_interactive(production_job(monkeypatch), SERVICE, None, ["sh"])


# -- lock status and release ----------------------------------------------------------------------
class LockSession(FakeSession):
    """The fake fleet's lock files, with shell_all, and hosts that do not answer the read."""

    def __init__(self, fleet, hosts, silent=(), fail_remove=(), swap_on_remove=None, **kw):
        super().__init__(fleet, hosts, **kw)
        self.silent, self.fail_remove = set(silent), set(fail_remove)
        self.swap_on_remove = swap_on_remove or {}

    def facts(self, fact_cls):
        return {h: (None if h in self.silent else f) for h, f in super().facts(fact_cls).items()}

    def shell_all(self, commands, timeout=None):
        out = {}
        for host, command in commands.items():
            if host in self.fail_remove:
                out[host] = Shell(False, "", ["sudo: a password is required"])
                continue
            if host in self.swap_on_remove:    # someone took the lock since it was read
                self.lock_files[host] = self.swap_on_remove[host]
            out[host] = self.shell(host, command, timeout=timeout)
        return out


def lock_bytes(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.fixture
def two(fleet):
    def make(lock_files, **kw):
        session = LockSession(fleet, ["mainpc", "pc2"], lock_files=lock_files, **kw)
        return FakeJob(fleet, session), session
    return make


def test_lock_status_names_each_hosts_holder(two):
    now = time.time()
    job, _ = two({"mainpc": lock_bytes(operator="bo@x", since=now, pid=7, machine="ctl",
                                       action="rollout", tag="T2", heartbeat=now),
                  "pc2": lock_bytes(operator="bo@x", paused=True, tag="T2", paused_since=now,
                                    id="bo@x-1")})
    rows = ops_day2.lock_status(job, None, print)
    assert [(r.host, r.state) for r in rows] == [("mainpc", "held"), ("pc2", "paused")]
    assert rows[0].description.startswith("locked by bo@x since ")
    assert "(rollout T2, pid 7 on ctl); alive (heartbeat" in rows[0].description
    assert rows[1].description.startswith("paused rollout T2 by bo@x since ")
    assert rows[0].sha and rows[0].holder["pid"] == 7


def test_lock_status_free_malformed_and_silent_hosts(fleet):
    session = LockSession(fleet, ["mainpc", "pc2"], silent=["pc2"],
                          lock_files={"mainpc": b"garbage"})
    rows = ops_day2.lock_status(FakeJob(fleet, session), None, print)
    assert [(r.host, r.state, r.description) for r in rows] == [
        ("mainpc", "malformed", "malformed lock file /var/lib/rig/rollout.lock (not JSON: "
                                "'garbage'): --break-lock removes it"),
        ("pc2", "unknown", "did not answer")]
    free = LockSession(fleet, ["mainpc", "pc2"])
    assert [(r.state, r.description) for r in ops_day2.lock_status(FakeJob(fleet, free), None,
                                                                    print)] == \
        [("free", "free"), ("free", "free")]
    free.unreachable["pc2"] = ["pc2: unreachable: no answer during the SSH handshake"]
    assert [(r.state, r.description) for r in ops_day2.lock_status(FakeJob(fleet, free), None,
                                                                    print)] == \
        [("free", "free"), ("unknown", "unreachable: no answer during the SSH handshake")]


def test_lock_release_refuses_a_live_holder_and_a_paused_rollout_without_force(two):
    now = time.time()
    live = lock_bytes(operator="bo@x", since=now, heartbeat=now, pid=7, machine="elsewhere")
    paused = lock_bytes(operator="bo@x", paused=True, tag="T2", paused_since=now)
    job, session = two({"mainpc": live, "pc2": paused})
    with pytest.raises(RigError) as caught:
        ops_day2.lock_release(job, None, False, print)
    assert caught.value.lines[0].startswith("mainpc: locked by bo@x since ")
    assert caught.value.lines[1].startswith("pc2: paused rollout T2 by bo@x since ")
    assert caught.value.lines[2] == (
        "the lock is in use (a live holder, a paused rollout, or an abort or promote that did "
        "not finish and keeps its record): nothing was released; `rig lock release --force` removes it "
        "anyway")
    assert session.locks == {"mainpc", "pc2"}
    lines = ops_day2.lock_release(job, None, True, print)
    assert lines[0].startswith("mainpc: released (locked by bo@x since ")
    assert lines[1].startswith("pc2: released (paused rollout T2 by bo@x since ")
    assert session.locks == set()


def test_lock_release_keeps_an_unfinished_aborts_record_without_force(two):
    dead = lock_bytes(operator="bo@x", since=1, heartbeat=1, pid=7, machine="elsewhere",
                      action="abort", tag="T2", aborting="bo@x-1", record={})
    job, session = two({"mainpc": dead})
    with pytest.raises(RigError) as caught:
        ops_day2.lock_release(job, None, False, print)
    assert "that did not finish (its holder is stale): `rig abort` finishes it" in \
        caught.value.lines[0]
    assert session.locks == {"mainpc"}
    assert ops_day2.lock_release(job, None, True, print)[1].startswith("mainpc: released (")
    assert session.locks == set()


def test_lock_release_removes_a_stale_lock_and_names_the_rest(fleet):
    stale = lock_bytes(operator="bo@x", since=1, heartbeat=1, pid=7, machine="elsewhere")
    session = LockSession(fleet, ["mainpc", "pc2"], silent=["pc2"], lock_files={"mainpc": stale})
    lines = ops_day2.lock_release(FakeJob(fleet, session), None, False, print)
    assert lines[0] == "pc2: did not answer"
    assert lines[1].startswith("mainpc: released (locked by bo@x since ")
    assert session.locks == set()
    free = LockSession(fleet, ["mainpc", "pc2"])
    assert ops_day2.lock_release(FakeJob(fleet, free), ["pc2"], False, print) == \
        ["pc2: free already"]


def test_lock_release_leaves_a_lock_taken_since_it_was_read(fleet):
    stale = lock_bytes(operator="bo@x", since=1, pid=7, machine="elsewhere")
    now = time.time()
    newer = lock_bytes(operator="zoe@y", since=now, heartbeat=now, pid=9, machine="m2",
                       action="rollout", tag="T3")
    session = LockSession(fleet, ["mainpc", "pc2"], lock_files={"mainpc": stale, "pc2": stale},
                          swap_on_remove={"mainpc": newer}, fail_remove=["pc2"])
    lines = ops_day2.lock_release(FakeJob(fleet, session), None, False, print)
    assert lines[0].startswith("mainpc: NOT released: the lock changed since it was read: "
                               "locked by zoe@y since ")
    assert "(rollout T3, pid 9 on m2)" in lines[0]
    assert lines[1] == "pc2: FAILED: sudo: a password is required"
    assert json.loads(session.lock_files["mainpc"])["operator"] == "zoe@y"



# -- prune: what fails ----------------------------------------------------------------------------
def test_prune_keep_must_be_at_least_one(fleet):
    with pytest.raises(RigError, match="^--keep must be at least 1$"):
        ops_day2.prune(SimpleNamespace(fleet=fleet), None, 0, True, print)


def test_prune_names_hosts_that_could_not_list_or_remove(fleet, monkeypatch):
    repo = fleet.registry.repository(SERVICE)
    listing = ("--- images\n"
               f"{repo}\tT1\tsha256:d1\tsha256:i1\t2026-11-21 00:00:00 +0000 UTC\t10MB\n"
               f"{repo}\tT2\tsha256:d2\tsha256:i2\t2026-11-22 00:00:00 +0000 UTC\t10MB\n"
               "--- containers\n")

    def mainpc(command):
        if "docker image ls" in command:
            return Shell(True, listing, [])
        return Shell(False, "", ["x", "Error: conflict: image is being used"])
    session = Scripted({"mainpc": mainpc, "pc2": Shell(False, "", ["permission denied"])})

    class Facts:
        def __init__(self, *args):
            pass

        def facts(self):
            return {"mainpc": SimpleNamespace(state={}), "pc2": SimpleNamespace(state={})}
    monkeypatch.setattr(ops_day2, "Rollout", Facts)
    report = ops_day2.prune(scripted_job(fleet, session), None, 1, True, print)
    assert report.failed == {"pc2": "permission denied"} and list(report.hosts) == ["mainpc"]
    assert report.hosts["mainpc"].refs == [f"{repo}:T1"] and report.freed == 10_000_000
    report = ops_day2._prune(scripted_job(fleet, session), session, ["mainpc", "pc2"], 1, False,
                             print)
    assert session.batches[-1] == {"mainpc": f"docker rmi {repo}:T1"}
    assert report.failed == {"pc2": "permission denied",
                             "mainpc": "x Error: conflict: image is being used"}


def test_prune_repositories_are_the_services_images_on_the_host(fleet):
    repos = ops_day2.repositories(SimpleNamespace(fleet=fleet), "mainpc")
    assert set(repos.values()) == set(fleet.services)
    assert all(r.startswith(fleet.registry.repository("")) for r in repos)


# -- history --------------------------------------------------------------------------------------
def test_history_reads_the_ledger_tail_of_each_host_and_names_the_silent(fleet):
    ledger = [{"time": "2026-11-24T10:00:00Z", "service": SERVICE, "result": "ok"},
              {"time": "2026-11-24T09:00:00Z", "service": "real_time_audio_pipeline",
               "result": "ok"}]
    session = Scripted({"mainpc": Shell(True, "\n".join(json.dumps(e) for e in ledger), []),
                        "pc2": Shell(False, "", ["tail: cannot open", "ssh: timed out"])})
    said = []
    rows = ops_history.history(scripted_job(fleet, session), None, None, 5, said.append)
    assert session.batches == [{h: cmd.ledger_tail(5).line for h in ("mainpc", "pc2")}]
    assert cmd.ledger_tail(5).line == "tail -n 5 /var/lib/rig/ledger.jsonl 2>/dev/null || true"
    assert session.timeouts == [60]
    assert said == ["pc2: could not read the ledger: ssh: timed out"]
    assert [(r["host"], r["service"]) for r in rows] == [("mainpc", "real_time_audio_pipeline"),
                                                         ("mainpc", SERVICE)]


def test_history_of_one_service_asks_only_its_hosts_and_keeps_its_lines(fleet):
    ledger = "\n".join(json.dumps({"time": f"2026-11-24T1{i}:00:00Z", "service": s})
                       for i, s in enumerate([SERVICE, "other", SERVICE]))
    session = Scripted({"mainpc": Shell(True, ledger, []), "pc2": Shell(True, "[1, 2]\n", [])})
    rows = ops_history.history(scripted_job(fleet, session), ["mainpc", "pc2"], SERVICE, 5, print)
    assert session.batches[0] == {h: cmd.ledger_tail(5, SERVICE).line for h in ("mainpc", "pc2")}
    assert cmd.ledger_tail(5, SERVICE).line == (
        f"grep -F -- '\"service\": \"{SERVICE}\"' /var/lib/rig/ledger.jsonl | tail -n 5 "
        "2>/dev/null || true")                 # filtered on the host: older lines still count
    assert [(r["host"], r["time"][11:13]) for r in rows] == [("mainpc", "10"), ("mainpc", "12")]


def test_history_keeps_the_host_a_line_names():
    rows = ops_history.merge({"mainpc": json.dumps({"time": "t", "host": "old-name"})}, None, 0)
    assert rows == [{"time": "t", "host": "old-name"}]
