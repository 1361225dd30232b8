"""Contract tests of rig's runner on pyinfra's @local connector: what rig relies on from
pyinfra's public API holds (several runs in one process, per-host results, a failed
operation, sudo and deadlines passed through), and the one workaround on its internals is
still where rig expects it. These fail when pyinfra changes under rig (make test-unit
PYINFRA=latest runs them on the newest 3.x)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import server

import rig
import tasks
from rig import runner
from rig.commands.host import greeting
from rig.inventory import Target
from rig.runner import Session

LOCAL = Target("@local", {"rig_groups": ["canary"]})


@operation()
def marker_present(path: str):
    """A file exists (a fact decides: the second run changes nothing)."""
    if host.get_fact(File, path=path):
        host.noop(f"{path} exists")
        return
    yield f"touch {path}"


@deploy("mark")
def mark(path: str):
    marker_present(name="marker", path=path)


@deploy("fail")
def fail_then_more(path: str):
    server.shell(name="fails", commands=["false"])
    marker_present(name="after the failure", path=path)


@deploy("Roll out")
def side_by_side_parts():
    from rig.commands.base import Cmd, concurrently

    server.shell(name="a, b, c: run T", commands=[concurrently(
        Cmd("true"), Cmd("echo 'port in use' >&2; exit 3"), Cmd("exit 1"),
        labels=["a: run T", "b: run T", "c: run T"])])


def test_a_line_of_parts_side_by_side_names_the_parts_that_failed():
    with Session([LOCAL]) as session:
        result = session.run(side_by_side_parts)["@local"]
    assert result.failed == ["Roll out | a, b, c: run T (failed: b: run T, c: run T)"]
    assert result.failed_parts == ["b: run T", "c: run T"]
    assert result.failed_steps == ["a, b, c: run T"]     # its own name, as the deploy gave it


@deploy("Unnamed")
def unnamed_failure():
    server.shell(commands=["false"])


def test_a_failed_step_without_a_name_of_its_own_goes_by_pyinfras():
    with Session([LOCAL]) as session:
        result = session.run(unnamed_failure)["@local"]
    assert result.failed_steps == result.failed and result.failed[0].startswith("Unnamed | ")


def test_several_runs_in_one_process_report_changed_then_unchanged(tmp_path):
    path = str(tmp_path / "m")
    with Session([LOCAL]) as session:
        first = session.run(mark, path=path)
        second = session.run(mark, path=path)
        third = session.run(mark, hosts=[], path=path)
    assert first["@local"].changed == ["mark | marker"] and first["@local"].ok
    assert second["@local"].changed == [] and second["@local"].unchanged == 1
    assert third == {}
    assert Path(path).exists()


def test_a_failed_operation_is_reported_and_later_ones_do_not_run(tmp_path):
    said: list[tuple[str, str]] = []
    with Session([LOCAL], say=lambda h, m: said.append((h, m))) as session:
        result = session.run(fail_then_more, path=str(tmp_path / "never"))["@local"]
        again = session.run(mark, path=str(tmp_path / "m"))["@local"]
    assert result.failed == ["fail | fails"] and not result.ok
    assert result.not_run == 1 and not (tmp_path / "never").exists()
    assert again.ok and again.changed == ["mark | marker"]  # the next step starts clean
    assert said == [("@local", "FAILED   fail | fails"), ("@local", "changed  mark | marker")]


def test_facts_and_one_off_commands_with_a_deadline():
    with Session([LOCAL]) as session:
        facts = session.facts(File, path="/etc/hostname")
        assert set(facts) == {"@local"}
        ok = session.shell("@local", "echo hello")
        fed = session.shell("@local", "cat", stdin="from stdin")
        slow = session.shell("@local", "sleep 5", timeout=1)
        after = session.shell("@local", "echo again")
        skipped = session.run(mark, path="/nonexistent/never")
    assert ok.ok and ok.stdout == "hello"
    assert fed.ok and fed.stdout == "from stdin"
    assert not slow.ok and slow.stderr == ["no answer within 1 s"]
    # a host that passed its deadline is lost for the rest of the run: not waited for again
    assert not after.ok and after.stderr == ["@local: lost earlier in this run (no answer within 1 s)"]
    assert skipped["@local"].unreachable == "lost earlier in this run (no answer within 1 s)"


def test_sudo_from_the_host_data_reaches_every_one_off_command():
    probe = "echo ${SUDO_UID:-no-sudo}"
    with Session([Target("@local", {"_sudo": True})]) as session:
        assert session.shell("@local", probe).stdout == "0"
    with Session([LOCAL]) as session:
        assert session.shell("@local", probe).stdout == "no-sudo"


def test_follow_streams_a_background_job_and_returns_its_exit_code(tmp_path):
    lines: list[str] = []
    command = "for i in 1 2 3; do echo line $i; sleep 0.2; done; printf tail; exit 3"
    with Session([LOCAL]) as session:
        code, last = session.follow("@local", runner.Cmd(command), str(tmp_path), lines.append,
                                    interval=0.1)
    assert code == 3
    assert lines == ["line 1", "line 2", "line 3", "tail"] and last == lines[:3]


def test_tcp_nodelay_workaround_still_finds_the_ssh_client():
    """The one place rig reaches into pyinfra: the SSH connector keeps its paramiko client in
    `.client` (set in connect). If this fails, pyinfra moved it: update runner._tcp_nodelay."""
    from pyinfra.connectors.ssh import SSHConnector

    assert "self.client" in inspect.getsource(SSHConnector)
    assert "get_transport" in inspect.getsource(runner._tcp_nodelay)


# -- one SSH connection per host per Session (rig/connector.py) ---------------------------------
class FakeTransport:
    def __init__(self):
        self.active, self.keepalive, self.sock, self.closed = True, None, self, False

    def is_active(self):
        return self.active

    def close(self):
        self.active, self.closed = False, True

    def set_keepalive(self, seconds):
        self.keepalive = seconds

    def setsockopt(self, *args):
        pass


class FakeClient:
    def __init__(self):
        self.transport, self.closed = FakeTransport(), False

    def get_transport(self):
        return self.transport

    def close(self):
        self.closed = True


@pytest.fixture
def handshakes(monkeypatch):
    """SSHConnector._connect stood in for: each call is one new connection (a handshake)."""
    from pyinfra.connectors.ssh import SSHConnector

    made: list[tuple[str, FakeClient]] = []

    def connect(self):
        self.client = FakeClient()
        made.append((self.host.name, self.client))
    monkeypatch.setattr(SSHConnector, "_connect", connect)
    return made


def test_a_partial_session_leaves_out_the_hosts_it_cannot_reach_or_greet(handshakes,
                                                                         monkeypatch):
    """For reads such as status: the others answer; without partial, nothing runs."""
    from pyinfra.api.exceptions import ConnectError
    from pyinfra.connectors.ssh import SSHConnector

    from rig.errors import RigError
    from tasks.util import Shell

    connect = SSHConnector._connect

    def refuse_node3(self):
        if self.host.name == "node3":
            raise ConnectError("timed out")
        connect(self)
    monkeypatch.setattr(SSHConnector, "_connect", refuse_node3)
    monkeypatch.setattr(runner, "host_shell", lambda host, command, **kw: Shell(
        host.name != "pc2", "sudo-ok\nuptime 50.0\n", ["no answer within 20 s"]))
    targets = [Target(n, {"ssh_hostname": a, "_sudo": True}) for n, a in
               (("mainpc", "10.0.0.1"), ("pc2", "10.0.0.2"), ("node3", "10.0.0.3"))]
    with Session(targets, partial=True) as session:
        assert session.names() == ["mainpc"]
        assert session.unreachable == {
            "pc2": ["pc2: no answer to rig's first command (no answer within 20 s): frozen "
                    "or overloaded?"],
            "node3": ["node3: unreachable: timed out"]}
    with pytest.raises(RigError, match="node3: unreachable: timed out"):
        Session(targets).__enter__()


def test_the_states_of_a_session_share_one_connection_per_host(handshakes):
    from rig.connector import PooledSSHConnector, SshPool

    targets = [Target("mainpc", {"ssh_hostname": "10.0.0.1", "rig_groups": ["canary"]}),
               Target("pc2", {"ssh_hostname": "10.0.0.2"})]
    pool, progress = SshPool(), runner._Progress(None)
    first = runner._new_state(targets, None, progress, 10, pool)
    assert sorted(h.name for h in first.activated_hosts) == ["mainpc", "pc2"]
    assert {type(h.connector) for h in first.activated_hosts} == {PooledSSHConnector}
    assert [h.name for h in first.inventory.get_group("canary")] == ["mainpc"]
    second = runner._new_state(targets, None, progress, 10, pool)    # the next step's State
    assert sorted(name for name, _ in handshakes) == ["mainpc", "pc2"] and pool.opened == 2
    clients = {h.name: h.connector.client for h in second.activated_hosts}
    assert clients == {name: client for name, client in handshakes}
    dict(handshakes)["pc2"].transport.active = False      # pc2's connection dropped
    runner._new_state(targets, None, progress, 10, pool)
    assert [name for name, _ in handshakes].count("pc2") == 2 and pool.opened == 3
    # the dead one's transport is closed, the client left to whoever holds it (paramiko's
    # close() would take its transport away from under them)
    assert not handshakes[0][1].transport.closed and dict(handshakes[:2])["pc2"].transport.closed
    assert not dict(handshakes[:2])["pc2"].closed
    pool.close()
    assert all(client.closed or client.transport.closed for _, client in handshakes)
    assert pool.clients == {}


def test_a_command_whose_channel_never_opens_fails_at_its_timeout_and_leaves_the_pool(
        handshakes, monkeypatch):
    """A host frozen between commands: paramiko's exec_command waits for the channel with no
    bound of pyinfra's. The pooled connector gives the command up at _timeout (plus a grace,
    shortened here) with TimeoutError, pyinfra's command error, and drops the connection."""
    import gevent

    from rig import connector
    from rig.connector import SshPool

    monkeypatch.setattr(connector, "COMMAND_GRACE", 0.05)
    monkeypatch.setattr(FakeClient, "exec_command", lambda self, *a, **k: gevent.sleep(3600),
                        raising=False)
    pool = SshPool()
    state = runner._new_state([Target("mainpc", {"ssh_hostname": "10.0.0.1"})], None,
                              runner._Progress(None), 10, pool)
    [host] = state.activated_hosts
    with pytest.raises(TimeoutError, match="no answer within 0 s"):
        with gevent.Timeout(5, AssertionError("not bounded")):
            host.connector.run_shell_command("true", _timeout=0.1)
    assert pool.clients == {} and handshakes[0][1].transport.closed


def test_without_a_pool_every_state_connects_and_at_names_keep_their_connector(handshakes):
    targets = [Target("mainpc", {"ssh_hostname": "10.0.0.1"})]
    runner._new_state(targets, None, runner._Progress(None), 10)
    runner._new_state(targets, None, runner._Progress(None), 10)
    assert [name for name, _ in handshakes] == ["mainpc", "mainpc"]
    assert runner.inventory_name(LOCAL) == "@local"
    assert runner.inventory_name(targets[0]) == "@rigssh/mainpc"


def test_the_pooled_connector_is_what_pyinfra_finds_by_its_entry_point():
    """Installed rig registers it (pyproject.toml); pyinfra looks connectors up by name."""
    from pyinfra.api.connectors import get_execution_connectors
    from pyinfra.connectors.ssh import SSHConnector

    from rig.connector import PooledSSHConnector

    assert get_execution_connectors()["rigssh"] is PooledSSHConnector
    assert issubclass(PooledSSHConnector, SSHConnector)
    # what the connector relies on: SSHConnector.connect() leaves the client in self.client
    assert "self.client = SSHClient()" in inspect.getsource(SSHConnector._connect)
    assert "self._connect()" in inspect.getsource(SSHConnector.connect)


def test_a_session_closes_its_pooled_connections(handshakes):
    session = Session([Target("mainpc", {"ssh_hostname": "10.0.0.1"})])
    with session:
        assert [name for name, _ in handshakes] == ["mainpc"]
    assert handshakes[0][1].closed and session.pool.clients == {}


def test_sessions_given_the_commands_pool_share_it_and_leave_it_open(handshakes):
    """promote and abort open a Session to read the paused lock, then one to roll out: with the
    command's pool (ops/job.py) the second logs in no more."""
    from rig.connector import SshPool

    pool, targets = SshPool(), [Target("mainpc", {"ssh_hostname": "10.0.0.1"})]
    with Session(targets, pool=pool):
        pass
    with Session(targets, pool=pool) as second:
        assert second.host("mainpc").connector.client is handshakes[0][1]
    assert len(handshakes) == 1 and not handshakes[0][1].closed and pool.opened == 1
    pool.close()
    assert handshakes[0][1].closed


@pytest.fixture
def dropping(monkeypatch, handshakes):
    """A Session on one SSH host whose commands answer from `script`: "drop" is a link that
    went away mid-command (the connection dies), anything else that answer; `ran` lists them."""
    from tasks.util import Shell

    ran: list[str] = []
    script: list[str] = []

    def host_shell(host, command, stdin=None, timeout=None, sudo=None):
        if command == greeting():
            return Shell(True, "uptime 100.00\n", [])
        ran.append(str(command))
        answer = script.pop(0) if script else "ok"
        if answer == "drop":
            host.connector.client.transport.active = False
            return Shell(False, "", ["connection lost: Socket is closed"])
        return Shell(True, answer, [])
    monkeypatch.setattr(runner, "host_shell", host_shell)
    return script, ran


def test_a_dropped_connection_is_opened_again_and_a_read_is_retried_on_it(dropping, handshakes):
    script, ran = dropping
    said: list[tuple[str, str]] = []
    with Session([Target("mainpc", {"ssh_hostname": "10.0.0.1"})],
                 say=lambda host, line: said.append((host, line))) as session:
        script[:] = ["drop", "answer"]
        read = session.shell("mainpc", "cat /var/lib/rig/state.json", retry=True)
        assert (read.ok, read.stdout) == (True, "answer") and session.lost == {}
        assert [name for name, _ in handshakes] == ["mainpc", "mainpc"]   # one new login
        assert session.host("mainpc").connector.client is handshakes[1][1]
        script[:] = ["drop"]
        swap = session.shell("mainpc", "docker run ...")    # not safe twice: its failure stands
        assert (swap.ok, swap.stderr) == (False, ["connection lost: Socket is closed"])
        assert session.lost == {} and len(handshakes) == 3
        after = session.shell("mainpc", "true")
        assert after.ok
    assert ran == ["cat /var/lib/rig/state.json", "cat /var/lib/rig/state.json", "docker run ...",
                   "true"]
    assert said == [("mainpc", "the SSH connection dropped; connected again")] * 2


def test_a_host_that_cannot_be_reached_again_is_lost(dropping, handshakes, monkeypatch):
    from pyinfra.connectors.ssh import SSHConnector

    script, ran = dropping
    with Session([Target("mainpc", {"ssh_hostname": "10.0.0.1",
                                    "ssh_connect_retries": 0})]) as session:
        def refused(self):
            raise OSError("Connection refused")
        monkeypatch.setattr(SSHConnector, "_connect", refused)
        script[:] = ["drop"]
        read = session.shell("mainpc", "cat x", retry=True)
        later = session.shell("mainpc", "cat x", retry=True)
    assert not read.ok and ran == ["cat x"]
    assert session.lost["mainpc"].startswith("connection lost: Socket is closed; connecting "
                                             "again failed: ")
    assert "Connection refused" in session.lost["mainpc"]
    assert later.stderr == [f"mainpc: lost earlier in this run ({session.lost['mainpc']})"]


PRIVATE = [
    r"\.is_executing\s*=", r"\.failed_hosts\s*[-+|&]?=", r"\.active_hosts\s*[-+|&]?=",
    r"op_hash_order\.(extend|append)", r"def get_op_order", r"class \w+\(State\)",
    r"get_transport\(\)\.open_session", r"\.open_session\(", r"sys\.path",
]


@pytest.mark.parametrize("pattern", PRIVATE)
def test_no_private_pyinfra_state_is_touched(pattern):
    """No module writes pyinfra's State/Host attributes, subclasses State, opens raw channels,
    or edits sys.path (the runner's TCP_NODELAY workaround is the single, tested exception)."""
    roots = [Path(rig.__file__).parent, Path(tasks.__file__).parent]
    offenders = [f"{p}:{i}" for root in roots for p in root.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(pattern, line)]
    assert offenders == []


def test_a_command_that_hangs_where_pyinfra_has_no_deadline_is_cut_by_the_wall_clock(monkeypatch):
    """pyinfra bounds reading output only; a hang opening the channel or waiting for the exit
    status (a host frozen between two commands) is cut by host_shell's own wall clock."""
    import time

    import gevent

    import tasks.util as util

    class FrozenHost:
        name = "frozen"
        data = {"_timeout": 1}
        state = None

        def run_shell_command(self, command, **kwargs):
            gevent.sleep(60)     # what paramiko's exec_command did for an hour
            return True, None

    monkeypatch.setattr(util, "WALL_SLACK", 0.2)
    started = time.monotonic()
    result = util.host_shell(FrozenHost(), "true")
    assert (result.ok, result.stderr) == (False, ["no answer within 1 s"])
    assert time.monotonic() - started < 5


@pytest.fixture
def slow_links(monkeypatch):
    """Handshakes that take a while (other greenlets run meanwhile), and a host_shell that runs
    on the client the host holds, failing as paramiko does on a dead or closed one."""
    import gevent
    from pyinfra.connectors.ssh import SSHConnector

    from tasks.util import Shell

    made: list[FakeClient] = []

    def connect(self):
        self.client = client = FakeClient()
        client.transport.active = False          # the handshake is under way
        gevent.sleep(0.05)
        client.transport.active = True
        made.append(client)
    monkeypatch.setattr(SSHConnector, "_connect", connect)
    ran: list[tuple[str, int]] = []

    def host_shell(host, command, stdin=None, timeout=None, sudo=None):
        client = host.connector.client
        if client.closed:
            raise AttributeError("'NoneType' object has no attribute 'open_session'")
        if not client.transport.active:
            return Shell(False, "", ["connection lost: SSH session not active"])
        if command == greeting():
            return Shell(True, "uptime 100.00\n", [])
        ran.append((str(command), made.index(client)))
        return Shell(True, "ok", [])
    monkeypatch.setattr(runner, "host_shell", host_shell)
    return made, ran


def test_a_connection_another_step_made_again_is_taken_before_the_next_command(slow_links):
    """The wave's State found the link dead and connected again: the Session's own host moves
    to that connection instead of running on the retired one."""
    from pyinfra.api import deploy

    @deploy("nothing")
    def nothing():
        pass
    made, ran = slow_links
    with Session([Target("mainpc", {"ssh_hostname": "10.0.0.1"})]) as session:
        made[0].transport.active = False         # sshd restarted while no command ran
        session.run(nothing)                     # the next step's State connects again
        answer = session.shell("mainpc", "probe")
    assert answer.ok and ran == [("probe", 1)] and len(made) == 2 and session.lost == {}


def test_two_greenlets_that_find_the_link_dropped_make_one_new_connection(slow_links):
    """A gate probe and the lock's heartbeat on one host, both after the drop."""
    import gevent

    made, ran = slow_links
    with Session([Target("mainpc", {"ssh_hostname": "10.0.0.1"})]) as session:
        made[0].transport.active = False
        probe = gevent.spawn(session.shell, "mainpc", "gate probe", retry=True)
        gevent.sleep(0.01)
        beat = gevent.spawn(session.shell, "mainpc", "lock refresh", retry=True)
        gevent.joinall([probe, beat])
        assert probe.value.ok and beat.value.ok, (probe.value, beat.value)
        assert len(made) == 2 and session.pool.opened == 2 and session.lost == {}
        assert sorted(ran) == [("gate probe", 1), ("lock refresh", 1)]
        assert session.shell("mainpc", "release", retry=True).ok


def test_a_link_that_went_down_while_a_command_ran_is_a_dropped_connection(dropping, handshakes):
    """paramiko gives no error when the transport dies mid-command: exit status -1 and what
    output came. The pool's view of the link says it was a drop."""
    from tasks.util import Shell

    script, ran = dropping
    with Session([Target("mainpc", {"ssh_hostname": "10.0.0.1"})]) as session:
        def died(host, command, stdin=None, timeout=None, sudo=None):
            host.connector.client.transport.active = False
            return Shell(False, "partial", [])
        runner.host_shell = died
        answer = session.shell("mainpc", "docker run ...")
        assert (answer.ok, answer.stdout, answer.stderr) == (
            False, "partial", ["connection lost: closed mid-command"])
    assert session.lost == {} and len(handshakes) == 2


def test_a_frozen_host_that_opens_no_channel_is_no_answer_and_lost_not_reconnected(dropping,
                                                                                   handshakes):
    """paramiko's channel_timeout on a link that is up: a frozen host, not a dropped link; it
    is lost at once (every later command would wait host_timeout again), never reconnected."""
    from paramiko.ssh_exception import SSHException

    import tasks.util as util

    class Silent:
        name = "mainpc"
        data = {"_timeout": 15, "ssh_paramiko_connect_kwargs": {"channel_timeout": 15}}
        state = None

        def run_shell_command(self, command, **kwargs):
            raise SSHException("Timeout opening channel.")
    why = ("no answer within 15 s (opening a channel: the host is frozen or overloaded?)")
    assert util.host_shell(Silent(), "true").stderr == [why]
    script, ran = dropping
    with Session([Target("mainpc", {"ssh_hostname": "10.0.0.1"})]) as session:
        runner.host_shell = lambda *a, **kw: util.Shell(False, "", [why])
        assert session.shell("mainpc", "cat x", retry=True).stderr == [why]
    assert session.lost == {"mainpc": why} and len(handshakes) == 1


def test_channel_opening_has_host_timeout_through_paramikos_public_connect_argument(fleet):
    from rig.inventory import targets

    found = targets(fleet, "production", {"RIG_HOST_MAINPC": "ops@192.0.2.1",
                                          "RIG_HOST_PC2": "ops@192.0.2.2"})
    assert [t.name for t in found] == ["mainpc", "pc2"]
    for target in found:
        kwargs = target.data["ssh_paramiko_connect_kwargs"]
        assert kwargs["channel_timeout"] == fleet.rollout.host_timeout
        assert target.data["_timeout"] == int(fleet.rollout.host_timeout)
    import inspect as _inspect

    import paramiko
    assert "channel_timeout" in _inspect.signature(paramiko.SSHClient.connect).parameters


def test_a_handshake_that_gets_no_answer_is_not_called_an_authentication_problem():
    line = runner._connect_error("Authentication error (username=ops, key=/k) (Authentication "
                                 "timeout.)")
    assert line.startswith("no answer during the SSH handshake (the host is frozen or overloaded?)")
    assert runner._connect_error("[Errno 111] Connection refused") == "[Errno 111] Connection refused"


def test_a_host_dropping_out_mid_deploy_prints_no_greenlet_traceback():
    import gevent
    from pyinfra.api.exceptions import PyinfraError

    with Session([LOCAL]):
        assert PyinfraError in gevent.get_hub().NOT_ERROR
    runner._quiet_failed_hosts()                      # idempotent
    assert list(gevent.get_hub().NOT_ERROR).count(PyinfraError) == 1


@deploy("hang")
def hang_on_the_host():
    import gevent
    from pyinfra.operations import python

    python.call(name="frozen", function=lambda: gevent.sleep(60))   # a host frozen mid-op


def test_a_run_whose_host_froze_past_its_budget_ends_and_loses_the_host(monkeypatch):
    """The op's greenlet outlives the run's wall clock and keeps the State's only pool slot;
    the run still ends (its leftovers are killed before pyinfra's disconnect_all spawns into
    that pool) and the host is lost, not waited for."""
    import gevent

    monkeypatch.setattr(runner, "_run_budget", lambda state: 0.3)
    with Session([LOCAL]) as session:
        with gevent.Timeout(20, AssertionError("the run did not end: disconnect_all waits")):
            result = session.run(hang_on_the_host)
    assert result["@local"].unreachable == "stopped answering: no answer within 0 s"


def test_paramikos_handshake_tracebacks_are_not_printed():
    """A frozen host's banner timeout: paramiko logs it as an ERROR with a traceback, which
    Python's last-resort handler printed (43 lines per host); rig says it in one line. In a
    process of its own: pytest's log capture would hide the last-resort handler."""
    import subprocess
    import sys

    script = """if True:
        import logging
        from rig.inventory import Target
        from rig.runner import Session
        with Session([Target("@local", {})]):
            try:
                raise TimeoutError("banner")
            except TimeoutError:
                logging.getLogger("paramiko.transport").error(
                    "Exception (client): Error reading SSH protocol banner", exc_info=True)
        print("done")
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert (done.stdout, done.stderr) == ("done\n", "")


def test_sudo_is_checked_on_the_hosts_side_by_side_once_per_command(handshakes, monkeypatch):
    """Each check waits until every host's has begun (one after another, the first would wait
    for ever: here 5 s, then it fails); a later Session on the command's pool checks none."""
    import gevent.event

    from rig import runner
    from rig.connector import SshPool
    from rig.errors import RigError
    from tasks.util import Shell

    begun, all_begun, waited = [], gevent.event.Event(), []

    def check(host, command, **kwargs):
        begun.append(host.name)
        if len(begun) == 2:
            all_begun.set()
        waited.append(all_begun.wait(timeout=5))
        return Shell(True, "sudo-ok\n" if host.name != "pc2" or len(begun) < 3
                     else "sudo-refused\n", [])
    monkeypatch.setattr(runner, "host_shell", check)
    pool = SshPool()
    targets = [Target(n, {"ssh_hostname": a, "_sudo": True, "ssh_user": "ops"})
               for n, a in (("mainpc", "10.0.0.1"), ("pc2", "10.0.0.2"))]
    with Session(targets, pool=pool):
        pass
    assert sorted(begun) == ["mainpc", "pc2"] and waited == [True, True]
    with Session(targets, pool=pool):
        pass
    assert len(begun) == 2          # not checked again
    with pytest.raises(RigError, match="pc2: sudo failed for ops"), \
            Session([Target("pc2", {"ssh_hostname": "10.0.0.2", "_sudo": True,
                                    "ssh_user": "ops"})]):
        pass                        # a new command's pool checks again (and here it fails)
    pool.close()
