"""rig stop, start, restart, maintenance on|off: one service by hand, under the rollout lock,
in the ledger."""

from __future__ import annotations

import click

from .common import Context, break_lock_options, echo, friendly, inventory_option, say_line

HOST_HELP = "Only these hosts or groups (default: every host that runs the service)."


def _control(verb: str, name: str | None = None):
    @click.command(name or verb)
    @inventory_option
    @click.argument("service")
    @click.option("--host", "--limit", "limit", metavar="HOSTS", default=None, help=HOST_HELP)
    @break_lock_options
    @click.pass_obj
    @friendly
    def command(obj: Context, inventory, service, limit, break_lock, force) -> None:
        from ..errors import RigError
        from ..ops.job import split
        from ..ops.service import control_service

        said = verb.replace("-", " ")
        echo(f"{said} {service}:")
        if force and not break_lock:
            raise RigError("--force goes with --break-lock")
        report = control_service(obj.job(inventory), verb, service, split(limit), break_lock,
                                 say_line, force)
        for line in report.lines:
            echo(f"  {line}", err=not report.ok)
        if report.unreleased_locks:
            hosts = ",".join(report.unreleased_locks)
            echo(f"rig: could not release the lock on {hosts}: `rig lock release --host {hosts}` "
                 "once it answers", err=True)
        if not report.ok:
            raise RigError(f"{said} {service} failed after {report.seconds:.1f} s")
        echo(f"{said} {service} done in {report.seconds:.1f} s")

    command.help = HELP[verb]
    return command


HELP = {
    "stop": """Stop SERVICE's container (docker stop) on its hosts, e.g. to free the GPU for a
    manual job. Takes the rollout lock and writes a ledger line; `rig status` then shows
    `stopped`, and `rig rollout` leaves it stopped (and says so) unless given --start-stopped.

    \b
    Example:
      rig stop model_ops_coordinator --host pc2""",
    "start": """Start SERVICE's stopped container again, gated like a rollout: it must pass the
    health gate, or the command fails with the gate's report. Lock and ledger line as for stop.

    \b
    Example:
      rig start model_ops_coordinator --host pc2""",
    "restart": """Restart SERVICE's container (docker restart), gated like a rollout; fails with
    the gate's report when it does not come back healthy. Lock and ledger line as for stop.

    \b
    Example:
      rig restart real_time_audio_pipeline""",
}

HELP["maintenance-on"] = """Put SERVICE in maintenance on its hosts: the host's proxy answers
    its port with 503 {"status": "maintenance", ...} and a Retry-After header (never a refused
    connection) once the requests it is serving have finished (up to its drain). The container
    keeps running. Takes the rollout lock and writes a ledger line; `rig status` shows
    `maintenance`. A rollout keeps it: the new version is started and gated, and clients reach
    it at `rig maintenance off`.

    \b
    Example:
      rig maintenance on model_ops_coordinator --host pc2"""
HELP["maintenance-off"] = """End SERVICE's maintenance: its container is gated like a rollout
    first (health and gate checks), then the proxy sends requests to it again. A container
    that fails its gate stays behind the maintenance answer, and the command fails with the
    gate's report.

    \b
    Example:
      rig maintenance off model_ops_coordinator --host pc2"""


@click.group()
def maintenance() -> None:
    """The proxy's maintenance answer for a service, on demand: `on` or `off`."""


maintenance.add_command(_control("maintenance-on", "on"))
maintenance.add_command(_control("maintenance-off", "off"))

COMMANDS = [_control("stop"), _control("start"), _control("restart"), maintenance]
