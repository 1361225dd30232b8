"""rig stop, start, restart: one service by hand, under the rollout lock, in the ledger."""

from __future__ import annotations

import click

from .common import Context, break_lock_options, echo, friendly, inventory_option, say_line

HOST_HELP = "Only these hosts or groups (default: every host that runs the service)."


def _control(verb: str):
    @click.command(verb)
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

        echo(f"{verb} {service}:")
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
            raise RigError(f"{verb} {service} failed after {report.seconds:.1f} s")
        echo(f"{verb} {service} done in {report.seconds:.1f} s")

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

COMMANDS = [_control("stop"), _control("start"), _control("restart")]
