"""A host that runs a command after rig stopped waiting for it: frozen with the command in
flight (a paused VM) and woken after rig called it lost, or left when rig was killed. Two rules:
a command the host begins too late does nothing (the start guard, in the host's own clock), and
a step that changes the host runs to its end whoever reads its output (spooled). Real shells
here; the lab freezes a host mid-rollout (tests/lab/test_lab_rollout_faults.py)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from rig import runner
from rig.commands.base import Cmd, spooled
from rig.commands.host import NOT_RUN, greeting, parse_greeting, start_guard
from rig.errors import RigError
from rig.inventory import Target
from rig.runner import Session
from tasks.util import Shell

from .test_runner import handshakes  # noqa: F401  (the fixture)


def _dead_channel(line: str) -> None:
    """Runs `line` with stdout and stderr on a pipe whose reader has gone, as sshd closes the
    channel of a client that went away: a pipe of the shell's own (no other process of the test
    run can hold its read end), and `line` begins a second after its reader, `:`, ended."""
    subprocess.run(["sh", "-c", f"( sleep 1; {line}\n) 2>&1 | :"], timeout=30)


def test_a_spooled_step_runs_to_its_end_when_nobody_reads_its_output(tmp_path):
    """Stop the old container, say so, start the new one: the `say` on a dead channel would
    kill the step between the two (SIGPIPE). Spooled, the second half still runs; unspooled,
    the same line dies at its first write (what a frozen host that woke did on the lab)."""
    step = Cmd(f"touch {tmp_path}/stopped; echo stopped; echo note >&2; touch {tmp_path}/started")
    spool = f"{tmp_path}/spool"
    _dead_channel(spooled(step, spool))
    assert (tmp_path / "started").exists() and not list(tmp_path.glob("spool*"))
    (tmp_path / "started").unlink()
    _dead_channel(step.line)                             # the mechanism, unspooled
    assert (tmp_path / "stopped").exists() and not (tmp_path / "started").exists()


def test_a_spooled_step_fails_as_it_failed_and_says_why_once_it_has_ended(tmp_path):
    spool = f"{tmp_path}/spool"
    done = subprocess.run(["sh", "-c", spooled(Cmd("echo out; echo why >&2; exit 3"), spool)],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "why\n")
    fine = subprocess.run(["sh", "-c", spooled(Cmd("echo out"), spool)], capture_output=True,
                          text=True, timeout=30)
    assert (fine.returncode, fine.stdout, fine.stderr) == (0, "", "")
    assert not list(tmp_path.glob("spool*"))
    # an `exit` in the step ends only the step (its subshell): the replay still comes
    ended = subprocess.run(["sh", "-c", seq_exit := spooled(Cmd("echo gone >&2; exit 1"), spool)],
                           capture_output=True, text=True, timeout=30)
    assert (ended.returncode, ended.stderr) == (1, "gone\n"), seq_exit
    # a spool folder that is not there: the step does not run, and the shell says why
    missing = subprocess.run(["sh", "-c", spooled(Cmd(f"touch {tmp_path}/ran"),
                                                  f"{tmp_path}/none/spool")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0 and "none/spool" in missing.stderr
    assert not (tmp_path / "ran").exists()
    with pytest.raises(ValueError, match="letters, digits"):
        spooled(Cmd("true"), "/var/lib/rig/a spool; rm -rf /")


def _uptime() -> float:
    return float(open("/proc/uptime").read().split()[0])


@pytest.mark.parametrize("ago, runs", [(0, True), (13, True), (16, True), (17, False),
                                       (3600, False)])
def test_the_start_guard_refuses_a_command_begun_after_rig_stopped_waiting(tmp_path, ago, runs):
    """rig waits 15 s for the command: begun 17 s after it was sent (the host was frozen),
    it does nothing, fails and says so; begun in time, it runs (and 16 s: one second's slack
    for the clocks' rounding)."""
    while _uptime() % 1 > 0.8:      # the shell reads the same whole second as this test
        time.sleep(0.05)
    sent = int(_uptime()) - ago
    line = f"{start_guard(sent, 15)} touch {tmp_path}/ran"
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
    assert (tmp_path / "ran").exists() is runs
    if runs:
        assert (done.returncode, done.stderr) == (0, "")
    else:
        assert done.returncode == NOT_RUN and NOT_RUN != 0      # refused is failed
        late = int(done.stderr.split("began it ")[1].split(" s")[0])
        assert late == ago
        assert done.stderr.endswith(" s after rig sent it, and rig waits 15 s\n")


@pytest.mark.parametrize("late_by, undone", [(None, False), (-5, False), (0.5, False),
                                              (1.5, True), (30, True)])
def test_a_step_the_host_ends_after_rig_gave_up_on_it_undoes_itself(late_by, undone):
    """undone_if_late, under a real sh: more than LATE_MARGIN (1 s) past rig's deadline for
    the step, in hundredths of a second, the undo runs and says so; before it, or with no
    clock (no _rig_late_cs), nothing."""
    from rig.commands.host import LATE_MARGIN, undone_if_late

    deadline = "" if late_by is None else \
        f"_rig_late_cs={int((_uptime() - late_by) * 100)}; "
    done = subprocess.run(["sh", "-c", deadline + undone_if_late("echo undone")],
                          capture_output=True, text=True, timeout=30)
    assert LATE_MARGIN == 1 and done.returncode == 0
    assert (done.stdout == "undone\n") is undone
    assert ("after rig had stopped waiting for it: undone" in done.stderr) is undone


def test_a_host_frozen_inside_its_swap_wakes_to_what_ran_before_not_the_new_one(tmp_path):
    """The guard let the swap begin in time; the host froze in it (here: a `docker run` that
    takes 2.5 s, with 0.5 s left of rig's wait) and ended it after rig gave up: the step puts
    back what it replaced (tasks/rollout.py swap_step), with the spool as in a rollout. A swap
    that ends in time keeps what it did."""
    from rig.commands import container as cmd
    from tasks.rollout import swap_step

    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/calls"\n'
                    '[ "$1" = run ] && sleep "${SLOW:-0}"\nexit 0\n')
    fake.chmod(0o755)
    step = swap_step([("a: run T", Cmd("docker run new"),
                       cmd.undo_swap("a", kept=True, proxied=False))])
    line = spooled(step, f"{tmp_path}/spool").line
    for slow, calls in (("2.5", ["run new", "rm -f rig-a", "rename rig-a-prev rig-a",
                                 "start rig-a"]),
                        ("0", ["run new"])):
        sent = _uptime() - 14.5                 # rig waits 15 s: its deadline is in 0.5 s
        (tmp_path / "calls").unlink(missing_ok=True)
        done = subprocess.run(["sh", "-c", f"{{ {start_guard(sent, 15)} {line}\n}}"],
                              capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}",
                                   "SLOW": slow})
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "calls").read_text().splitlines() == calls, done.stderr


def test_the_greeting_says_whether_sudo_works_and_where_the_hosts_clock_stands():
    done = subprocess.run(["sh", "-c", greeting()], capture_output=True, text=True, timeout=30)
    sudo, uptime = parse_greeting(done.stdout)
    assert done.returncode == 0 and uptime is not None and abs(uptime - _uptime()) < 5
    assert parse_greeting("sudo-ok\nuptime 1234.56\n") == (True, 1234.56)
    assert parse_greeting("sudo-refused\nuptime 1234.56\n") == (False, 1234.56)
    assert parse_greeting("sudo-ok\n") == (True, None)          # no /proc/uptime: no guard
    assert parse_greeting("sudo-ok\nuptime soon\n") == (True, None)
    assert parse_greeting("Password: sudo-ok") == (False, None)


@pytest.fixture
def connected(handshakes, monkeypatch):  # noqa: F811
    """An SSH host on the pooled connector; what pyinfra's connector was asked to run."""
    from pyinfra.connectors.ssh import SSHConnector

    from rig.connector import SshPool

    sent: list[str] = []

    def run(self, command, print_output=False, print_input=False, **arguments):
        sent.append(command.get_raw_value() if hasattr(command, "get_raw_value") else command)
        return True, None
    monkeypatch.setattr(SSHConnector, "run_shell_command", run)
    pool = SshPool()
    state = runner._new_state([Target("mainpc", {"ssh_hostname": "10.0.0.1"})], None,
                              runner._Progress(None), 10, pool)
    [host] = state.activated_hosts
    yield host, pool, sent
    pool.close()


def test_a_command_to_a_greeted_host_carries_its_start_guard_in_the_hosts_clock(connected):
    """The guard counts what rig waits for the command: its _timeout (pyinfra stops reading its
    output then, and the step fails)."""
    host, pool, sent = connected
    host.connector.run_shell_command("docker ps", _timeout=15)
    assert sent == ["docker ps"]                       # not greeted: no clock, no guard
    pool.clock["mainpc"] = 5000.0 - time.monotonic()   # the host's uptime is 5000 s now
    host.connector.run_shell_command("docker ps", _timeout=15)
    import re
    cs = int(re.match(r"\{ _rig_late_cs=(\d+); ", sent[1]).group(1))
    assert 500000 + 1500 <= cs < 500000 + 1500 + 50      # sent at 5000 s, rig waits 15 s
    rest = start_guard(5000, 15).split("; ", 1)[1]       # the guard, in whole seconds
    assert sent[1] == f"{{ _rig_late_cs={cs}; {rest} docker ps\n}}"
    host.connector.run_shell_command("docker ps")      # no deadline: nothing to count from
    assert sent[2] == "docker ps"


def test_the_guarded_line_keeps_the_command_as_it_was(connected):
    host, pool, sent = connected
    pool.clock["mainpc"] = _uptime() - time.monotonic()     # this machine plays the host

    def run(command: str) -> subprocess.CompletedProcess:
        host.connector.run_shell_command(command, _timeout=12)
        return subprocess.run(["sh", "-c", sent[-1]], capture_output=True, text=True, timeout=30)
    assert run("printf '%s\\n' one; exit 3").returncode == 3
    assert run("cat <<EOF\nhere\nEOF").stdout == "here\n"          # its last line stays EOF
    assert run("echo ran # a comment").stdout == "ran\n"
    chdir = subprocess.run(["sh", "-c", f"cd /nowhere && {sent[-1]}"], capture_output=True,
                           text=True, timeout=30)
    assert chdir.stdout == "" and chdir.returncode != 0    # pyinfra's _chdir: `cd D && ...`
    # a probe whose deadline is 12 s, sent 10 s ago: rig still waits; 15 s ago: it gave up
    pool.clock["mainpc"] = _uptime() - 10 - time.monotonic()
    assert run("echo ran").stdout == "ran\n"
    pool.clock["mainpc"] = _uptime() - 15 - time.monotonic()
    assert run("echo ran").returncode == NOT_RUN


def test_each_host_is_greeted_once_per_command_and_its_clock_kept(handshakes,  # noqa: F811
                                                                  monkeypatch):
    from rig.connector import SshPool

    greeted: list[str] = []

    def answer(host, command, **kwargs):
        assert command == greeting() and kwargs == {"timeout": runner.GREETING_TIMEOUT,
                                                     "sudo": False}
        greeted.append(host.name)
        if host.name == "pc2":          # reached as root: its sudo is not asked about
            return Shell(False, "", ["no answer within 20 s"])
        if host.name == "node3":
            return Shell(True, "sudo-refused\nuptime 5000.00\n", [])
        return Shell(True, "sudo-ok\nuptime 5000.00\n", [])
    monkeypatch.setattr(runner, "host_shell", answer)
    pool = SshPool()
    targets = [Target("mainpc", {"ssh_hostname": "10.0.0.1", "_sudo": True}),
               Target("pc2", {"ssh_hostname": "10.0.0.2"}), Target("@local", {})]
    with Session(targets, pool=pool):
        assert abs(pool.clock["mainpc"] + time.monotonic() - 5000.0) < 1
    assert sorted(greeted) == ["mainpc", "pc2"]        # @local: no SSH, no sudo
    assert "pc2" not in pool.clock                     # no answer: its commands go unguarded
    with Session(targets, pool=pool):
        pass
    assert sorted(greeted) == ["mainpc", "pc2"]        # the command's later Sessions: not again
    with Session([Target("@local", {"_sudo": True})], pool=pool):
        pass                                           # not SSH, and sudo: its sudo is checked
    assert greeted[-1] == "@local"
    with pytest.raises(RigError, match="node3: sudo failed for the SSH user .*"):
        Session([Target("node3", {"ssh_hostname": "10.0.0.3", "_sudo": True})], pool=pool)\
            .__enter__()
    # a host reached with sudo that does not answer at all is not said to refuse sudo
    with pytest.raises(RigError) as raised:
        Session([Target("pc2", {"ssh_hostname": "10.0.0.2", "_sudo": True})],
                pool=SshPool()).__enter__()
    assert raised.value.lines == ["pc2: no answer to rig's first command (no answer within "
                                  "20 s): frozen or overloaded?", "nothing was changed"]
    pool.close()


class SlowHost:
    """A host whose clock reads 5000 s at `base`, and whose greetings are held up on their way
    there (`going`) or back (`coming`), one pair of delays per greeting."""

    def __init__(self, *delays: tuple[float, float]):
        self.base, self.delays, self.greetings = time.monotonic(), list(delays), 0

    def answer(self, host, command, **kwargs):
        import gevent

        going, coming = self.delays[self.greetings] if self.greetings < len(self.delays) \
            else (0.0, 0.0)
        self.greetings += 1
        gevent.sleep(going)
        uptime = 5000.0 + time.monotonic() - self.base
        gevent.sleep(coming)
        return Shell(True, f"sudo-ok\nuptime {uptime:.3f}\n", [])

    @property
    def true_offset(self) -> float:
        return 5000.0 - self.base


@pytest.mark.parametrize("delays, greetings", [
    ([(0.5, 0.0)], 2),          # held up on its way (a host frozen as it came): asked again
    ([(0.0, 0.5)], 2),          # held up on its way back: asked again
    ([(0.0, 0.0)], 1),          # quick: once
    ([(0.5, 0.0)] * 3, 3),      # slow each time: the tries end, the guard errs strict
])
def test_the_hosts_clock_never_makes_the_guard_lenient(handshakes, monkeypatch,  # noqa: F811
                                                       delays, greetings):
    """The guard must never let a host begin a command after rig gave up on it: the host's
    clock is dated at the greeting's answer (strict by at most its round trip), and a greeting
    slower than CLOCK_ROUND_TRIP is asked again for a closer reading."""
    from rig.connector import SshPool

    monkeypatch.setattr(runner, "CLOCK_ROUND_TRIP", 0.3)
    slow = SlowHost(*delays)
    monkeypatch.setattr(runner, "host_shell", slow.answer)
    pool = SshPool()
    with Session([Target("mainpc", {"ssh_hostname": "10.0.0.1", "_sudo": True})], pool=pool):
        error = pool.clock["mainpc"] - slow.true_offset   # > 0: the guard would be lenient
    pool.close()
    assert slow.greetings == greetings
    assert -0.6 < error <= 0.01
    if greetings < 3:
        assert error > -0.3          # the quick answer's reading is kept


def test_greetings_asked_again_end_with_the_greeting_deadline_and_keep_an_earlier_clock(
        handshakes, monkeypatch):  # noqa: F811
    from rig.connector import SshPool

    monkeypatch.setattr(runner, "CLOCK_ROUND_TRIP", 0.1)
    monkeypatch.setattr(runner, "GREETING_TIMEOUT", 0.4)
    slow = SlowHost(*[(0.5, 0.0)] * 3)      # past the greetings' own deadline: not again
    monkeypatch.setattr(runner, "host_shell", slow.answer)
    pool = SshPool()
    with Session([Target("mainpc", {"ssh_hostname": "10.0.0.1", "_sudo": True})], pool=pool):
        pass
    assert slow.greetings == 1
    monkeypatch.setattr(runner, "GREETING_TIMEOUT", 20)
    slow = SlowHost((0.5, 0.0))

    def then_silent(host, command, **kwargs):   # a slow answer, then none at all
        return slow.answer(host, command) if slow.greetings == 0 else \
            Shell(False, "", ["no answer within 20 s"])
    monkeypatch.setattr(runner, "host_shell", then_silent)
    with Session([Target("pc2", {"ssh_hostname": "10.0.0.2"})], pool=pool):  # root: no sudo
        assert -0.6 < pool.clock["pc2"] - slow.true_offset <= 0.01   # the slow one's clock
    pool.close()


def test_a_step_rig_gave_up_waiting_for_leaves_its_host_lost_for_the_rest_of_the_run(
        handshakes, monkeypatch):  # noqa: F811
    """It may still run there (spooled, it runs to its end): a rollback or any later step on
    that host would race it, so the host is lost, as a frozen one is, even though it answers
    again at once."""
    import gevent
    from pyinfra.api import deploy
    from pyinfra.operations import server

    from rig import connector
    from rig.connector import SshPool

    monkeypatch.setattr(connector, "COMMAND_GRACE", 0.05)
    monkeypatch.setattr(handshakes_client(), "exec_command",
                        lambda self, *a, **k: gevent.sleep(3600), raising=False)

    @deploy("slow")
    def slow():
        server.shell(name="swap", commands=["docker run x"])
    @deploy("quick")
    def quick():
        pass
    pool = SshPool()
    pool.greeted.add("mainpc")
    pool.timed_out["mainpc"] = "no answer within 20 s"      # a one-off command's, before
    with Session([Target("mainpc", {"ssh_hostname": "10.0.0.1", "_timeout": 1})],
                 pool=pool) as session:
        assert session.run(quick)["mainpc"].ok and session.lost == {}   # only the run's own
        with gevent.Timeout(30, AssertionError("not bounded")):
            result = session.run(slow)["mainpc"]
        assert result.failed == ["slow | swap"]
        assert result.unreachable == ("stopped answering: no answer within 1 s (what it was "
                                      "running may still run)")
        assert session.shell("mainpc", "true").stderr[0].startswith("mainpc: lost earlier")
    assert pool.timed_out == {}
    pool.close()


def handshakes_client():
    from .test_runner import FakeClient

    return FakeClient


def test_a_host_whose_state_cannot_be_read_while_its_steps_are_added_fails_the_step():
    """roll_back reads each host's state as its operations are added: a host that gives no
    answer there is failed (pyinfra's 'No hosts remaining!' was a traceback), not taken for
    one with nothing to do."""
    from pyinfra import host
    from pyinfra.api import FactBase, deploy

    class Broken(FactBase):
        def command(self):
            return "echo broken >&2; exit 3"

    @deploy("reads")
    def reads():
        host.get_fact(Broken)
    with Session([Target("@local", {})]) as session:
        result = session.run(reads)["@local"]
    assert result.failed == ["reading the host's state"] and not result.ok
