"""Helpers for tasks: the fleet a host carries, and running a command with data on stdin."""

from __future__ import annotations

import shlex

from pyinfra import logger

from rig.config import Fleet


def fleet_of(host) -> Fleet:
    fleet = host.data.get("rig_fleet")
    if fleet is None:
        raise RuntimeError(f"{host.name}: host.data.rig_fleet missing (group_data/all.py loads it)")
    return fleet


def host_name(host) -> str:
    return host.data.get("rig_host") or host.name


def run_on(host, command: str) -> tuple[bool, str, list[str]]:
    """Run one command on a connected inventory host, outside any operation:
    (ok, stdout, stderr lines)."""
    from pyinfra.context import ctx_host, ctx_state

    with ctx_state.use(host.state), ctx_host.use(host):
        ok, output = host.run_shell_command(command)
    return ok, output.stdout, output.stderr_lines


def _channel(host, command: str):
    """A paramiko channel on the host's pyinfra SSH connection, or None without one."""
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    if transport is None:
        return None
    if host.data.get("_sudo"):
        command = f"sudo -H -n sh -c {shlex.quote(command)}"
    channel = transport.open_session()
    return channel, command


def stream(host, command: str, on_line, keep: int = 40,
           timeout: float | None = None) -> tuple[int, list[str]]:
    """Run a long command (a build, a push) over the host's SSH connection, calling on_line for
    each output line (stdout and stderr merged) as it comes. Returns (exit code, last lines).
    With a timeout, a host that goes quiet that long ends it (socket.timeout is raised)."""
    opened = _channel(host, command)
    if opened is None:
        return 255, [f"{host.name}: needs an SSH connection"]
    channel, command = opened
    channel.set_combine_stderr(True)
    if timeout:
        channel.settimeout(timeout)
    last: list[str] = []
    try:
        channel.exec_command(command)
        for raw in channel.makefile("rb"):
            line = raw.decode(errors="replace").rstrip("\n")
            last = (last + [line])[-keep:]
            on_line(line)
        code = channel.recv_exit_status()
    finally:
        channel.close()
    return code, last


def run_with_stdin(state, host, command: str, data: str, what: str) -> bool:
    """A FunctionCommand body: run `command` over the host's SSH connection and write `data`
    to its stdin. For secrets: they never appear in argv, in a file, or in pyinfra's output."""
    opened = _channel(host, command)
    if opened is None:
        logger.error(f"{host.print_prefix}{what}: needs an SSH connection")
        return False
    channel, command = opened
    try:
        channel.exec_command(command)
        channel.sendall(data.encode())
        channel.shutdown_write()
        code = channel.recv_exit_status()
        errors = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
    finally:
        channel.close()
    if code != 0:
        logger.error(f"{host.print_prefix}{what} failed (exit {code}): {errors.splitlines()[-1:]}")
        return False
    return True
