"""rig status, logs, exec, lock status/release, prune: the days after a rollout."""

from __future__ import annotations

import sys

import click

from ..errors import RigError
from .common import (
    CONTEXT,
    Context,
    dump,
    echo,
    friendly,
    host_say,
    inventory_option,
    json_option,
    limit_option,
    say_line,
)

HOST_OPTION = {"metavar": "HOSTS", "default": None,
               "help": "Only these hosts or groups (default: every host that runs it)."}


@click.command()
@inventory_option
@click.argument("service")
@click.option("--host", "--limit", "limit", **HOST_OPTION)
@click.option("-f", "--follow", is_flag=True, help="Keep following every host until Ctrl-C.")
@click.option("--since", metavar="DURATION", default=None, help="Only lines newer than this (10m).")
@click.option("-n", "--tail", type=click.IntRange(0, 1_000_000), default=None,
              help="The last N lines of each host.")
@json_option
@click.pass_obj
@friendly
def logs(obj: Context, inventory, service, limit, follow, since, tail, as_json) -> None:
    """The logs of SERVICE on every host that runs it, merged in time order, each line
    prefixed with its host; -f follows all of them at once.

    \b
    Example:
      rig logs model_ops_coordinator --since 10m
      rig logs real_time_audio_pipeline --host pc2 -f"""
    from ..ops import day2 as ops
    from ..ops.job import split

    job = obj.job(inventory)
    if follow:
        try:
            problems = ops.follow_logs(job, service, split(limit), since, tail,
                                       lambda host, line: echo(f"{host:<10} {line}"))
        except KeyboardInterrupt:
            return
        if problems:   # a host dropped out of the stream: said, and the exit code says so
            raise RigError(*problems)
        return
    lines = ops.logs(job, service, split(limit), since, tail, say_line)
    if as_json:
        dump(lines)
        return
    for line in lines:
        echo(f"{line.host:<10} {line.time} {line.text}")


@click.command("exec", context_settings={**CONTEXT, "ignore_unknown_options": True})
@inventory_option
@click.argument("service")
@click.option("--host", "--limit", "limit", **HOST_OPTION)
@click.option("-it", "--interactive", "interactive", is_flag=True,
              help="Interactive, with a terminal (one host; through ssh -t).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_obj
@friendly
def exec_(obj: Context, inventory, service, limit, interactive, command) -> None:
    """Run COMMAND inside SERVICE's container (as its user, 10001) on each host that runs it;
    rig exits with the command's exit code (the highest, over several hosts).

    \b
    Example:
      rig exec model_ops_coordinator --host pc2 -- id -u
      rig exec real_time_audio_pipeline --host mainpc -it -- sh"""
    from ..ops import day2 as ops
    from ..ops.job import split

    job = obj.job(inventory)
    if interactive:
        sys.exit(ops.exec_interactive(job, service, split(limit), list(command)))
    results = ops.exec_in(job, service, split(limit), list(command))
    many = len(results) > 1
    for r in results:
        for line in r.output.splitlines():
            echo(f"{r.host:<10} {line}" if many else line)
        if r.code:
            echo(f"rig: {r.host}: exit code {r.code}", err=True)
    sys.exit(max(r.code for r in results))


@click.group(context_settings=CONTEXT)
def lock() -> None:
    """The rollout lock on each host (/var/lib/rig/rollout.lock)."""


@lock.command("status")
@inventory_option
@click.option("--host", "--limit", "limit", metavar="HOSTS", default=None,
              help="Only these hosts or groups (default: all).")
@json_option
@click.pass_obj
@friendly
def lock_status(obj: Context, inventory, limit, as_json) -> None:
    """Every host's lock: free, or held by whom, since when, and whether that holder is alive
    (a dead pid on this machine, a stale heartbeat) or a paused rollout. A host that does not
    answer is `unknown` (and why), and the exit code is 1.

    \b
    Example:
      rig lock status --json"""
    from ..ops import day2 as ops
    from ..ops.job import split

    rows = ops.lock_status(obj.job(inventory), split(limit), say_line)
    if as_json:
        dump(rows)
    for r in rows if not as_json else []:
        shown = r.description if r.holder or r.state == "unknown" else ""
        echo(f"{r.host:<10} {r.state:<8} {shown}".rstrip())
    unknown = [r.host for r in rows if r.state == "unknown"]
    if unknown:       # the others are shown; the exit code says the picture is not whole
        echo(f"rig: {len(unknown)} host(s) did not answer: {', '.join(unknown)}", err=True)
        sys.exit(1)


@lock.command("release")
@inventory_option
@click.option("--host", "--limit", "limit", metavar="HOSTS", default=None,
              help="Only these hosts or groups (default: all).")
@click.option("--force", is_flag=True,
              help="Even a live holder's lock (fresh heartbeat) or a paused rollout's.")
@click.pass_obj
@friendly
def lock_release(obj: Context, inventory, limit, force) -> None:
    """Remove the rollout lock, with the rules of --break-lock: a lock whose holder is dead
    (its pid gone on this machine), stale or malformed goes; a live holder (fresh heartbeat,
    from any machine) or a paused rollout (`rig promote` / `rig abort`) only with --force.
    Exactly the lock that was read is removed: one taken since is left alone and named.

    \b
    Example:
      rig lock release --host pc2"""
    from ..ops import day2 as ops
    from ..ops.job import split

    released = ops.lock_release(obj.job(inventory), split(limit), force, say_line)
    for line in released:
        echo(f"  {line}")
    if released.not_released:   # every line first: what happened on the hosts that did go
        raise RigError(f"the lock was not released on {', '.join(released.not_released)}")


@click.command()
@inventory_option
@click.option("--host", "--limit", "limit", metavar="HOSTS", default=None,
              help="Only these hosts or groups (default: all).")
@click.option("--keep", type=int, default=None,
              help="Newest images kept per service (default: the spec's rollout.keep_images).")
@click.option("--dry-run", is_flag=True, help="Show what would go; change nothing.")
@json_option
@click.pass_obj
@friendly
def prune(obj: Context, inventory, limit, keep, dry_run, as_json) -> None:
    """Remove, on each host, images of rig's services that no container uses (running, stopped
    or kept as -prev) beyond the KEEP newest per service, and containers of services the spec
    no longer has (orphans). Never what runs or what a rollback needs (state.json's current
    and previous digests). Prints what goes, with sizes, and the space freed.

    \b
    Example:
      rig prune --dry-run
      rig prune --keep 2 --host pc2"""
    from ..ops import day2 as ops
    from ..ops.job import split

    report = ops.prune(obj.job(inventory), split(limit), keep, dry_run, say_line)
    if as_json:
        dump(report)
    else:
        verb = "would remove" if dry_run else "removed"
        for host, plan in report.hosts.items():
            for name in plan.orphans:
                echo(f"{host:<10} {verb} orphan container {name}")
            for image in plan.images:
                echo(f"{host:<10} {verb} {image.ref} "
                           f"{image.id[7:19]} {image.size / 1e6:.0f} MB")
            echo(f"{host:<10} {plan.freed / 1e6:.0f} MB {'to free' if dry_run else 'freed'}; "
                       f"kept {sum(plan.kept.values())} image(s)")
        echo(f"{'would free' if dry_run else 'freed'} {report.freed / 1e6:.0f} MB in all")
    if report.failed:
        raise RigError(*(f"{h}: {why}" for h, why in report.failed.items()))


@click.command()
@inventory_option
@limit_option
@json_option
@click.pass_obj
@friendly
def status(obj: Context, inventory, limit, as_json) -> None:
    """What runs where: host x service with tag, digest, health now, and since when. A host
    that does not answer is shown as `unreachable` (and why), the others as usual, and the
    exit code is 1.

    \b
    Example:
      rig --env production status --json"""
    from ..ops import rollout as ops
    from ..ops.job import split

    rows = ops.status(obj.job(inventory), split(limit), host_say)
    unreachable = sorted({r.host for r in rows if r.health == ops.UNREACHABLE})
    if as_json:
        dump(rows)
    else:
        _status_table(rows)
    if unreachable:   # the others are shown; the exit code says the picture is not whole
        echo(f"rig: {len(unreachable)} host(s) did not answer: {', '.join(unreachable)}",
             err=True)
        sys.exit(1)


def _status_table(rows) -> None:
    echo(f"{'HOST':<10} {'SERVICE':<30} {'TAG':<28} {'DIGEST':<14} {'HEALTH':<12} "
         f"{'PROXY':<12} SINCE")
    for r in rows:
        echo(f"{r.host:<10} {r.service:<30} {r.tag or '-':<28} "
                   f"{(r.digest or '-')[7:19] or '-':<14} {r.health:<12} {r.proxy or '-':<12} "
                   f"{r.since or '-'}")
    for host, note in dict.fromkeys((r.host, r.note) for r in rows if r.note):
        echo(f"{host}: {note}")


COMMANDS = [status, logs, exec_, lock, prune]
