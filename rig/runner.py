"""Drive pyinfra through its public API: build an Inventory from rig's targets, connect, read
facts, run one-off commands, run @deploy functions, and report per host what changed.

    with Session(targets) as s:            # connect_all on a control State (facts, commands)
        s.facts(RolloutState)              # {host: fact}, read in parallel
        s.shell("mainpc", "docker ps")     # one command, honouring the host's sudo and a deadline
        s.run(roll_out, hosts=[...], ...)  # a fresh Inventory + State: add_deploy, run_ops

Every run step gets its own State (pyinfra's State is built for one add-ops-then-run pass),
so nothing here subclasses State or writes to its attributes; the States of one Session share
each host's one SSH connection (rig's pooled connector, connector.py). This is the one place rig talks
to pyinfra's engine; tasks/ holds what runs on hosts. The one workaround on pyinfra's internals
(TCP_NODELAY on the SSH socket) is isolated in `_tcp_nodelay` and guarded by a contract test.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import gevent
from pyinfra.api import BaseStateCallback, Config, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.context import ctx_host, ctx_state

from tasks.util import DEFAULT_TIMEOUT, Shell, host_shell

from .commands import jobs
from .commands.base import (
    FAILED_MARK,
    Cmd,  # noqa: F401  (re-exported for callers of follow)
)
from .commands.host import greeting, parse_greeting
from .connector import POOL_KEY, PooledSSHConnector, SshPool
from .errors import RigError
from .inventory import Target


@dataclass
class HostResult:
    name: str
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)
    not_run: int = 0
    unreachable: str | None = None
    failed_parts: list[str] = field(default_factory=list)  # of a line of parts side by side
    failed_steps: list[str] = field(default_factory=list)  # the failed operations' own names

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unreachable


def tcp_nodelay_enabled() -> bool:
    """TCP_NODELAY on the SSH socket (LAB-NOTES: 49 ms -> 7.5 ms per command round trip)."""
    return os.environ.get("RIG_TCP_NODELAY", "1") != "0"


GREETING_TIMEOUT = 20  # seconds a host has to answer its greeting (sudo check, its clock)
GREETING_TRIES = 3     # greetings to a host that answers slowly, for its clock (_greeting)
CLOCK_ROUND_TRIP = 1.0  # seconds: a greeting answered slower is asked again
LIVENESS_TIMEOUT = 10  # seconds a host whose step failed has to answer `true` before it is lost
KEEPALIVE = 15  # seconds: an SSH keepalive, so a dropped link is noticed (and a NAT keeps it)


def _tcp_nodelay(host, nodelay: bool = True) -> bool:
    """THE workaround on pyinfra internals: the SSH connector's paramiko client. pyinfra sets
    no socket options, so Nagle and delayed ACKs hold every small packet, and no keepalive.
    Returns whether it was applied; tests/unit/test_runner.py fails when pyinfra moves it."""
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    if transport is None:
        return False
    transport.set_keepalive(KEEPALIVE)
    if nodelay:
        transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True


class _Progress(BaseStateCallback):
    """One line per changed or failed operation per host; remembers why a host did not connect."""

    def __init__(self, say: Callable[[str, str], None] | None):
        self.say = say
        self.connect_errors: dict[str, str] = {}

    def host_connect(self, state, host):
        _tcp_nodelay(host, nodelay=tcp_nodelay_enabled())

    def host_connect_error(self, state, host, error):
        message = str(error.args[0] if getattr(error, "args", None) else error)
        self.connect_errors[host.name] = _connect_error(message.splitlines()[0] if message
                                                        else repr(error))

    def operation_host_error(self, state, host, op_hash, retry_count=0, max_retries=0):
        if self.say:
            self.say(host.name, f"FAILED   {_op_name(state, op_hash)}")

    def operation_end(self, state, op_hash):
        """After an operation ran on every host (its results are complete only then)."""
        if not self.say:
            return
        for host in state.activated_hosts:
            if op_hash not in host.op_hash_order:
                continue
            meta = state.get_op_data_for_host(host, op_hash).operation_meta
            if not meta.is_complete():
                continue
            if not meta.did_error() and meta.did_change():
                self.say(host.name, f"changed  {_op_name(state, op_hash)}")


_NO_ANSWER = ("Authentication timeout", "Error reading SSH protocol banner",
              "Timeout opening channel")


def _connect_error(message: str) -> str:
    """paramiko's words for a host that stopped answering mid-handshake (a frozen host accepts
    TCP and then says nothing), said as what they mean."""
    if any(words in message for words in _NO_ANSWER):
        return f"no answer during the SSH handshake (the host is frozen or overloaded?): {message}"
    return message


def _op_name(state: State, op_hash: str) -> str:
    return ", ".join(sorted(state.get_op_meta(op_hash).names))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _PyinfraLog(logging.Handler):
    """pyinfra's warnings and errors (a failed command's stderr) as indented lines."""

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if "executed 0 commands" in message:
            return  # a FunctionCommand that said no (a health gate): rig reports why itself
        for line in message.splitlines():
            try:
                print("      " + _ANSI.sub("", line), file=sys.stderr)
            except OSError:   # nobody reads stderr any more: the work goes on
                return


def _quiet_pyinfra_logger() -> logging.Logger:
    logger = logging.getLogger("pyinfra")
    logger.handlers[:] = [_PyinfraLog(logging.WARNING)]
    logger.propagate = False
    # paramiko logs a handshake that got no answer (a frozen host) as an ERROR with its
    # traceback, which Python's last-resort handler printed: rig says it in one line per host
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    return logger


def inventory_name(target: Target) -> str:
    """SSH targets go through rig's pooled SSH connector (connector.py: one connection per host
    per Session); names that already say their connector (@local in tests) stay as they are."""
    return target.name if target.name.startswith("@") else f"@rigssh/{target.name}"


def _make_inventory(targets: Iterable[Target], pool: SshPool | None = None) -> Inventory:
    targets = list(targets)
    groups: dict[str, list[str]] = {}
    for t in targets:
        for group in t.data.get("rig_groups", ()):
            groups.setdefault(group, []).append(inventory_name(t))
    extra = {POOL_KEY: pool} if pool is not None else {}
    return Inventory(([(inventory_name(t), {**t.data, **extra}) for t in targets], {}),
                     **{g: (names, {}) for g, names in groups.items()})


def _new_state(targets: list[Target], parallel: int | None, progress: _Progress,
               connect_timeout: int, pool: SshPool | None = None) -> State:
    inventory = _make_inventory(targets, pool)
    config = Config(PARALLEL=parallel or 0, FAIL_PERCENT=None, CONNECT_TIMEOUT=connect_timeout)
    state = State(inventory, config, check_for_changes=False)
    state.add_callback_handler(progress)
    logger = _quiet_pyinfra_logger()
    logger.setLevel(logging.CRITICAL)  # rig reports unreachable hosts itself, one line each
    try:
        with ctx_state.use(state):
            connect_all(state)
    except PyinfraError:
        pass  # every host failed: the caller reports each with its reason
    finally:
        logger.setLevel(logging.WARNING)
    return state


def _quiet_failed_hosts() -> None:
    """A host that drops out mid-deploy makes pyinfra raise PyinfraError in that host's greenlet
    ("No hosts remaining!"); rig reports the host itself (LOST, with why), so gevent's hub must
    not print that greenlet's traceback (Hub.NOT_ERROR: gevent's documented list of exceptions
    it does not report)."""
    hub = gevent.get_hub()
    if PyinfraError not in hub.NOT_ERROR:
        hub.NOT_ERROR = (*hub.NOT_ERROR, PyinfraError)


def _greeting(host) -> tuple[Shell, float | None]:
    """The greeting's answer, and the host's clock against this machine's monotonic clock
    (None: no clock read). The host reads its clock somewhere between the greeting's sending
    and its answer: dated at the answer, the start guard can only err strict, by at most that
    round trip (dated at the sending, a greeting held up on its way, a host frozen for a few
    seconds, would let the host begin commands rig had given up on). So a slow answer is asked
    again, and the quickest kept: the guard's second of slack covers a round trip of up to
    CLOCK_ROUND_TRIP; past it, late commands are refused a little early, never run."""
    best: tuple[float, float] | None = None        # (round trip, offset)
    started = time.monotonic()
    for _ in range(GREETING_TRIES):
        sent = time.monotonic()
        result = host_shell(host, greeting(), timeout=GREETING_TIMEOUT, sudo=False)
        answered = time.monotonic()
        _, uptime = parse_greeting(result.stdout if result.ok else "")
        if uptime is None:
            return result, best and best[1]
        if best is None or answered - sent < best[0]:
            best = (answered - sent, uptime - answered)
        if best[0] <= CLOCK_ROUND_TRIP or answered - started > GREETING_TIMEOUT:
            break
    return result, best[1]


class Session:
    """with Session(targets) as s: s.facts(...), s.shell(...), s.run(deploy) -> results."""

    def __init__(self, targets: list[Target], say: Callable[[str, str], None] | None = None,
                 parallel: int | None = None, connect_timeout: int = 10,
                 describe_connect_error: Callable[[Target, str], list[str]] | None = None,
                 pool: SshPool | None = None, partial: bool = False):
        if not targets:
            raise RigError("no hosts selected")
        self.targets = list(targets)
        # partial (reads, such as status): a host that cannot be reached or greeted is left out
        # and said in .unreachable (host -> lines), instead of failing the whole session
        self.partial, self.unreachable = partial, {}
        self.say, self.parallel, self.connect_timeout = say, parallel, connect_timeout
        self.describe = describe_connect_error or (lambda t, m: [f"{t.name}: unreachable: {m}"])
        self.state: State | None = None
        # one SSH connection per host, shared by every State below; a pool handed in (the
        # command's, ops/job.py) is shared with the command's other Sessions and outlives this one
        self.pool, self.own_pool = pool or SshPool(), pool is None
        self._using: dict[str, object] = {}
        self.progress = _Progress(say)
        self.lost: dict[str, str] = {}   # hosts that stopped answering during this session
        self.clock, self.sleep = time.monotonic, gevent.sleep  # what gates wait on

    def __enter__(self) -> Session:
        _quiet_failed_hosts()
        self.state = _new_state(self.targets, self.parallel, self.progress, self.connect_timeout,
                                self.pool)
        self._using = dict(self.pool.clients)  # the connection each control host runs on
        failed = {t.name: self.describe(t, self.progress.connect_errors.get(t.name,
                                                                             "no reason given"))
                  for t in self.targets if not self._connected(t.name)}
        if failed and not self.partial:
            self.close()
            raise RigError(*(line for lines in failed.values() for line in lines))
        self.unreachable.update(failed)
        self._greet()
        return self

    def _connected(self, name: str) -> bool:
        return any(h.name == name for h in self.state.activated_hosts)

    def _greet(self) -> None:
        """Each host's first command, once per rig command (the pool remembers it for the
        command's later Sessions), on the hosts side by side (commands/host.py greeting):
        where its clock stands, for the start guard of every later command on it (connector.py),
        and, for hosts reached as a user with sudo, that sudo does not ask for a password. That
        is checked as the plain SSH user with sudo's own complaint silenced: through pyinfra's
        sudo, a password prompt would make pyinfra ask for one on the terminal."""
        needing = [h for h in self.hosts if h.name not in self.pool.greeted
                   and (h.data.get("_sudo") or isinstance(h.connector, PooledSSHConnector))]
        jobs = {h.name: gevent.spawn(_greeting, h) for h in needing}
        gevent.joinall(list(jobs.values()))
        problems: dict[str, str] = {}
        for host in needing:
            result, offset = jobs[host.name].value or (None, None)  # (None: it raised)
            sudo_ok, _ = parse_greeting(result.stdout if result and result.ok else "")
            if offset is not None:
                self.pool.clock[host.name] = offset
            if sudo_ok or not host.data.get("_sudo"):
                self.pool.greeted.add(host.name)
                continue
            if result is None or not result.ok:   # not asked about sudo: it did not answer
                why = result.stderr[-1] if result and result.stderr else "the greeting failed"
                problems[host.name] = (f"{host.name}: no answer to rig's first command "
                                       f"({why}): frozen or overloaded?")
                continue
            user = host.data.get("ssh_user") or "the SSH user"
            problems[host.name] = (f"{host.name}: sudo failed for {user} (it asks for a "
                                   f"password, or {user} may not use it); rig needs passwordless "
                                   f"sudo: `{user} ALL=(ALL) NOPASSWD: ALL` in /etc/sudoers.d/ "
                                   "(see README)")
        if problems and not self.partial:
            self.close()
            raise RigError(*problems.values(), "nothing was changed")
        self.unreachable.update({name: [line] for name, line in problems.items()})

    @property
    def hosts(self) -> list:
        """Connected (and greeted) pyinfra hosts, in target order."""
        order = {t.name: i for i, t in enumerate(self.targets)}
        return sorted((h for h in self.state.activated_hosts if h.name not in self.unreachable),
                      key=lambda h: order[h.name])

    def host(self, name: str):
        return next(h for h in self.hosts if h.name == name)

    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    # -- reading and one-off commands ----------------------------------------------------------
    def facts(self, fact_cls, hosts: list[str] | None = None, **kwargs) -> dict[str, object]:
        """One fact per host, read in parallel; a host that fails gives None (see .lost)."""
        chosen = [h for h in self.hosts if hosts is None or h.name in hosts]

        def read(host):
            with ctx_state.use(self.state), ctx_host.use(host):
                return host.get_fact(fact_cls, **kwargs)

        jobs = {host.name: gevent.spawn(read, host) for host in chosen}
        gevent.joinall(list(jobs.values()))
        results = {}
        for name, job in jobs.items():
            if job.successful():
                results[name] = job.value
            else:
                self.lost[name] = f"could not read {fact_cls.__name__}: {job.exception}"
                results[name] = None
        return results

    def shell(self, name: str, command: Cmd | str, stdin: str | None = None,
              timeout: float | None = None, retry: bool = False) -> Shell:
        """One command; a host already lost in this session is not waited for again, and one
        that passes its deadline is lost from then on. A connection that dropped (sshd
        restarted, a reset link) is opened again once: the host is lost only when that fails
        too. retry=True (a read, or a command safe to run twice): the command runs again on
        the new connection; otherwise its failure stands (it may have run before the drop)."""
        if name in self.lost:
            return Shell(False, "", [f"{name}: lost earlier in this run ({self.lost[name]})"])
        if self.pool.clients.get(name) is not self._using.get(name):
            failed = self._reconnect(name, quiet=True)   # another step connected again since
            if failed:
                self.lost[name] = f"connecting again failed: {failed}"
                return Shell(False, "", [self.lost[name]])
        result = host_shell(self.host(name), command, stdin=stdin, timeout=timeout)
        why = result.stderr[-1] if not result.ok and result.stderr[-1:] else ""
        if not result.ok and not why.startswith(("no answer within", "connection lost")) \
                and self.pool.live(name) is None:  # the link went down while the command ran
            why = f"connection lost: {why or 'closed mid-command'}"
            result = Shell(False, result.stdout, [*result.stderr[:-1], why])
        if why.startswith("connection lost"):
            failed = self._reconnect(name)
            if failed:
                self.lost[name] = f"{why}; connecting again failed: {failed}"
            elif retry:
                return self.shell(name, command, stdin, timeout)
        elif why.startswith("no answer within"):
            self.lost[name] = why
        return result

    def _reconnect(self, name: str, quiet: bool = False) -> str | None:
        """The host's connection again, through pyinfra's public disconnect/connect: the pooled
        connector takes a live connection another step opened since, or opens one (within the
        connect timeout). Returns why that failed, None when connected."""
        host = self.host(name)
        host.disconnect()
        try:
            with gevent.Timeout(self.connect_timeout + 5, TimeoutError):
                host.connect(show_errors=False, raise_exceptions=True)
        except TimeoutError:
            return f"no answer within {self.connect_timeout + 5} s"
        except Exception as e:  # noqa: BLE001 - pyinfra's ConnectError, or the link's own
            return _connect_error(str(e).splitlines()[0] if str(e) else type(e).__name__)
        self._using[name] = self.pool.clients.get(name)
        if self.say and not quiet:
            self.say(name, "the SSH connection dropped; connected again")
        return None

    def shell_all(self, commands: dict[str, Cmd | str], timeout: float | None = None,
                  retry: bool = False) -> dict[str, Shell]:
        """One command per host, run on all of them at once."""
        jobs = {name: gevent.spawn(self.shell, name, c, None, timeout, retry)
                for name, c in commands.items()}
        gevent.joinall(list(jobs.values()))
        return {name: job.value if job.successful() else Shell(False, "", [str(job.exception)])
                for name, job in jobs.items()}

    def follow(self, name: str, command: Cmd, workdir: str, on_line: Callable[[str], None],
               timeout: float = 3600, interval: float = 0.5, stop=None) -> tuple[int, list[str]]:
        """A long command (a build, a push) run as a background job in `workdir` on the host and
        followed by short polls (commands/jobs.py); lines go to on_line as they come. Returns
        (exit code, last lines); the job is stopped if rig is interrupted, the deadline passes
        or `stop` (an Event) is set (then the exit code is 130)."""
        started = self.shell(name, jobs.job_start(command, workdir), timeout=60)
        if not started.ok:
            return 255, started.stderr[-5:]
        deadline, offset, partial, last = time.monotonic() + timeout, 0, b"", []
        finished = False
        try:
            while time.monotonic() < deadline:
                if stop is not None and stop.is_set():
                    return 130, last
                result = self.shell(name, jobs.job_poll(workdir, offset), timeout=60,
                                    retry=True)   # a read: safe on a new connection
                if not result.ok:
                    return 255, result.stderr[-5:] or ["lost the host while following"]
                code, offset, data = jobs.parse_poll(result.stdout)
                *lines, partial = (partial + data).split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    last = (last + [line])[-40:]
                    on_line(line)
                if code is not None:
                    finished = True
                    if partial:
                        on_line(partial.decode(errors="replace"))
                    return code, last
                gevent.sleep(interval)
            return 124, last + [f"still running after {timeout:.0f} s: stopped"]
        finally:
            if not finished:
                self.shell(name, jobs.job_stop(workdir), timeout=20, retry=True)

    # -- deploys --------------------------------------------------------------------------------
    def run(self, deploy_func, *args, hosts: list[str] | None = None,
            **kwargs) -> dict[str, HostResult]:
        """Run a @deploy on the chosen hosts (default: every connected host) on a fresh State;
        per host what changed, read from pyinfra's results."""
        wanted = [t for t in self.targets if (hosts is None or t.name in hosts)
                  and self._connected(t.name)]
        results: dict[str, HostResult] = {
            t.name: HostResult(t.name, unreachable=f"lost earlier in this run ({self.lost[t.name]})")
            for t in wanted if t.name in self.lost}
        chosen = [t for t in wanted if t.name not in self.lost]
        if not chosen:
            return results
        state = _new_state(chosen, self.parallel, self.progress, self.connect_timeout, self.pool)
        try:
            for t in chosen:
                if not any(h.name == t.name for h in state.activated_hosts):
                    message = self.progress.connect_errors.get(t.name, "did not connect")
                    self.lost[t.name] = message
                    results[t.name] = HostResult(t.name, unreachable=message)
            for t in chosen:
                self.pool.timed_out.pop(t.name, None)
            with ctx_state.use(state):
                try:
                    add_deploy(state, deploy_func, *args, **kwargs)
                except PyinfraError:
                    pass  # no host left whose facts could be read: each is reported below
                budget = _run_budget(state)
                try:
                    with gevent.Timeout(budget, TimeoutError):
                        run_ops(state)
                except PyinfraError:
                    pass  # failed hosts are reported from the per-op results below
                except TimeoutError:  # a host that stopped answering where pyinfra has no bound
                    for host in state.activated_hosts:
                        if _host_result(state, host).not_run:
                            self.lost[host.name] = f"no answer within {budget:.0f} s"
            for host in state.activated_hosts:
                results[host.name] = _host_result(state, host)
                if host in state.failed_hosts and not results[host.name].failed:
                    results[host.name].failed.append("reading the host's state")  # adding ops
                timed_out = self.pool.timed_out.pop(host.name, None)
                if timed_out:
                    # rig gave up waiting for a step that may still run there: the host is not
                    # touched again in this run (a rollback would race it), as a lost one
                    self.lost[host.name] = f"{timed_out} (what it was running may still run)"
        finally:
            stop_leftovers(state)
            disconnect_all(state)
        for name, result in results.items():  # failed: an answer, or a host that went away?
            if result.failed and name not in self.lost:
                self.shell(name, "true", timeout=LIVENESS_TIMEOUT, retry=True)
            if name in self.lost and not result.unreachable:
                result.unreachable = f"stopped answering: {self.lost[name]}"
        return {t.name: results[t.name] for t in wanted if t.name in results}

    def close(self) -> None:
        if self.state is not None:
            stop_leftovers(self.state)
            disconnect_all(self.state)
            self.state = None
        if self.own_pool:
            self.pool.close()

    def __exit__(self, *exc) -> None:
        self.close()


def stop_leftovers(state: State, wait: float = 10.0) -> None:
    """Kill what still runs in the State's pools: an operation's greenlet on a host that froze
    past the run's budget keeps its pool slot, and pyinfra's disconnect_all, which spawns into
    that same pool, would wait for the slot forever (a one-host wave has a pool of one)."""
    for pool in (state.pool, state.fact_pool):
        if len(pool):
            pool.kill(block=True, timeout=wait)


def _run_budget(state: State) -> float:
    """A wall clock for a whole deploy, past which a host that has not finished is lost: three
    of its deadlines per operation (channel, output, exit status) plus two. A backstop only:
    every command has its own deadline, and channel opening has host_timeout (inventory)."""
    def per_host(host) -> float:
        return float(host.data.get("_timeout") or DEFAULT_TIMEOUT) * (3 * len(host.op_hash_order) + 2)
    return max((per_host(h) for h in state.activated_hosts), default=float(DEFAULT_TIMEOUT))


def _host_result(state: State, host) -> HostResult:
    result = HostResult(host.name)
    for op_hash in state.get_op_order():
        data = state.get_op_data_for_host(host, op_hash) if op_hash in host.op_hash_order else None
        if data is None:
            continue
        meta, name = data.operation_meta, _op_name(state, op_hash)
        if not meta.is_complete():
            result.not_run += 1
        elif meta.did_error():   # a line of parts side by side names those that failed
            parts = [line.removeprefix(FAILED_MARK) for line in meta.stderr_lines
                     if line.startswith(FAILED_MARK)]
            result.failed.append(f"{name} (failed: {', '.join(parts)})" if parts else name)
            result.failed_parts += parts
            # as the deploy named it (the global argument `name`), without its deploy's name
            result.failed_steps.append(data.global_arguments.get("name") or name)
        elif meta.did_change():
            result.changed.append(name)
        else:
            result.unchanged += 1
    return result
