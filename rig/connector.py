"""One SSH connection per host per command: pyinfra's SSH connector, with its connection kept.

rig gives every run step a fresh pyinfra State (a State is built for one add-ops-then-run pass,
runner.py), and every State connects its hosts again: a one-host rollout opened three SSH
connections (pre-flight, the wave, the record step), each a handshake and a login (about
120 ms of sshd here, LAB-NOTES). This connector is pyinfra's own SSH connector with one change:
`connect()` first looks in the Session's pool for a live connection to the same host and uses
it; only when there is none does it connect, and the new connection joins the pool. Commands
of several States then run as channels of one SSH transport, as `ssh -O ControlMaster` would.

It is a connector as pyinfra intends them to be added: a class named by the
`pyinfra.connectors` entry point (`@rigssh/<host>` in the inventory, pyproject.toml), whose
`make_names_data` yields the plain host name. What it relies on of SSHConnector is that
`connect()` leaves the paramiko client in `self.client` and commands use it; the same
attribute `runner._tcp_nodelay` reads, and the contract tests in tests/unit/test_runner.py
fail if pyinfra moves it. pyinfra's `disconnect()` clears the SFTP cache and leaves the client
open; the Session closes the pool's clients when it ends."""

from __future__ import annotations

import time

from pyinfra.api import StringCommand
from pyinfra.connectors.ssh import SSHConnector

from .commands.host import start_guard

POOL_KEY = "rig_ssh_pool"
"""The host data key holding the Session's pool (an SshPool)."""


class SshPool:
    """host name -> the paramiko client of its one connection in this command."""

    def __init__(self) -> None:
        self.clients: dict[str, object] = {}
        self.opened = 0          # connections made (a test and the bench read it)
        self.timed_out: dict[str, str] = {}  # host -> a command rig gave up waiting for (it
                                             # may still run there: runner.py Session.run)
        self.greeted: set[str] = set()   # hosts whose greeting answered (runner.py): sudo works
        self.clock: dict[str, float] = {}  # host -> its uptime less our monotonic clock, as the
                                           # greeting read it (the start guard's clock)
        self._locks: dict[str, object] = {}

    def __copy__(self) -> SshPool:
        return self      # pyinfra hands out shallow copies of host data; a pool is shared

    def live(self, name: str):
        client = self.clients.get(name)
        transport = client.get_transport() if client is not None else None
        return client if transport is not None and transport.is_active() else None

    def lock(self, name: str):
        """One connect at a time per host: a gate probe and the lock's heartbeat that find the
        link dropped at once make one new connection, not two half-made ones."""
        from gevent.lock import Semaphore

        return self._locks.setdefault(name, Semaphore())

    def retire(self, name: str) -> None:
        """A dead connection leaves the pool. Only its transport is closed: the client object
        stays usable by whoever still holds it, whose next command then fails as a dropped
        link does and connects again (paramiko's close() would leave them an AttributeError)."""
        client = self.clients.pop(name, None)
        transport = client.get_transport() if client is not None else None
        if transport is not None:
            transport.close()

    def close(self) -> None:
        for client in self.clients.values():
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a connection that is already gone is closed
                pass
        self.clients.clear()


COMMAND_GRACE = 10.0
"""Seconds a command may run past its _timeout before it is given up (see run_shell_command)."""


class PooledSSHConnector(SSHConnector):
    """pyinfra's SSH connector, reusing the Session's live connection to the host, and holding
    every command to its _timeout."""

    def run_shell_command(self, command, print_output: bool = False, print_input: bool = False,
                          **arguments):
        """pyinfra bounds only the reading of a command's output by _timeout: opening the
        channel and waiting for the exit status have no bound, so a host frozen between two
        commands (a paused VM, a dead link without a RST) held an operation until the whole
        deploy's backstop, five host_timeouts for a one-command step. Here the whole command
        is bounded: past _timeout plus a grace it fails with TimeoutError, which pyinfra
        reports as the command's error, and the connection, now of no use, leaves the pool."""
        import gevent

        timeout = arguments.get("_timeout")
        if not timeout:
            return super().run_shell_command(command, print_output, print_input, **arguments)
        command = self._guarded(command, float(timeout))
        try:
            with gevent.Timeout(float(timeout) + COMMAND_GRACE,
                                TimeoutError(f"no answer within {float(timeout):.0f} s")):
                return super().run_shell_command(command, print_output, print_input,
                                                 **arguments)
        except TimeoutError:    # pyinfra's own (its output, at _timeout) or the one above
            pool = self.host.data.get(POOL_KEY)
            if pool is not None:
                pool.retire(self.host.name)
                pool.timed_out[self.host.name] = f"no answer within {float(timeout):.0f} s"
            raise

    def _guarded(self, command, timeout: float):
        """The command behind the host's start guard (commands/host.py start_guard): begun later
        than rig waits for it (its _timeout: pyinfra stops reading its output then, and rig
        gives it up), in the host's clock, it does nothing. Only on hosts whose clock the
        greeting read; pyinfra's StringCommand keeps the command as it was."""
        pool = self.host.data.get(POOL_KEY)
        offset = pool.clock.get(self.host.name) if pool is not None else None
        if offset is None:
            return command
        guard = start_guard(time.monotonic() + offset, float(timeout))
        # one list (pyinfra's _chdir: `cd D && {...}`); `}` on a line of its own after the
        # command as it is (a here-document's last line must stay exactly its word)
        return StringCommand(f"{{ {guard} ", command, "\n}", _separator="")

    @staticmethod
    def make_names_data(name):
        yield name, {}, []    # the host keeps its own name; its data says where to connect

    def connect(self) -> None:
        pool = self.host.data.get(POOL_KEY)
        if pool is None:
            super().connect()
            return
        with pool.lock(self.host.name):
            client = pool.live(self.host.name)
            if client is not None:
                self.client = client
                return
            pool.retire(self.host.name)        # a dead one: it goes
            try:
                super().connect()
            except BaseException:  # failed, timed out or killed mid-handshake: nothing half-open
                half = getattr(self, "client", None)
                if half is not None:
                    half.close()
                raise
            pool.clients[self.host.name] = self.client
            pool.opened += 1
