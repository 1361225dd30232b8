"""Helpers for tasks: the fleet a host carries, and one-off commands on a connected host.

Every command goes through pyinfra's `host.run_shell_command`, with the host's sudo setting
and a deadline: nothing here opens its own channel."""

from __future__ import annotations

from dataclasses import dataclass

import gevent
from paramiko import SSHException
from pyinfra.context import ctx_host, ctx_state

from rig.commands.base import Cmd, render
from rig.config import Fleet

DEFAULT_TIMEOUT = 120  # seconds any one remote command may take unless the caller says
WALL_SLACK = 5  # seconds past a command's deadline before the whole call (channel open, exit
                # status: pyinfra bounds neither) is abandoned: the host is lost


def fleet_of(host) -> Fleet:
    fleet = host.data.get("rig_fleet")
    if fleet is None:
        raise RuntimeError(f"{host.name}: host.data.rig_fleet missing (the inventory sets it)")
    return fleet


def host_name(host) -> str:
    return host.data.get("rig_host") or host.name


@dataclass
class Shell:
    """What one command printed: ok (exit 0), stdout, stderr lines."""

    ok: bool
    stdout: str
    stderr: list[str]


def connection_args(host, timeout: float | None = None, sudo: bool | None = None) -> dict:
    """The connector arguments a one-off command takes from the host: sudo as the inventory
    says (unless `sudo` overrides it), and a deadline (pyinfra's `_timeout`)."""
    args: dict = {"_timeout": int(timeout or host.data.get("_timeout") or DEFAULT_TIMEOUT)}
    if host.data.get("_sudo") if sudo is None else sudo:
        args["_sudo"] = True
    return args


def channel_timeout(host) -> int:
    """How long paramiko waits for a new channel on the host (host_timeout, inventory.py)."""
    kwargs = host.data.get("ssh_paramiko_connect_kwargs") or {}
    return int(kwargs.get("channel_timeout") or host.data.get("_timeout") or DEFAULT_TIMEOUT)


def host_shell(host, command: Cmd | str | list, stdin: str | None = None,
               timeout: float | None = None, sudo: bool | None = None) -> Shell:
    """One command on a connected pyinfra host, outside any operation or inside a
    FunctionCommand. Secrets go on stdin: never in argv, never in pyinfra's output."""
    args = connection_args(host, timeout, sudo)
    if stdin is not None:
        args["_stdin"] = stdin
    with ctx_state.use(host.state), ctx_host.use(host):
        try:  # pyinfra's _timeout covers reading output; the wall clock covers the rest
            with gevent.Timeout(args["_timeout"] + WALL_SLACK, TimeoutError):
                ok, output = host.run_shell_command(render(command), **args)
        except TimeoutError:
            return Shell(False, "", [f"no answer within {args['_timeout']} s"])
        except (OSError, EOFError, SSHException) as e:  # the link dropped (sshd killed, reset)
            if "Timeout opening channel" in str(e):   # the link is up, the host says nothing
                return Shell(False, "", [f"no answer within {channel_timeout(host)} s "
                                         "(opening a channel: the host is frozen or overloaded?)"])
            return Shell(False, "", [f"connection lost: {e or type(e).__name__}"])
    return Shell(ok, output.stdout, output.stderr_lines)
