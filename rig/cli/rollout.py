"""rig plan, rollout, rollback."""

from __future__ import annotations

import sys

import click

from .common import (
    Context,
    break_lock_options,
    dump,
    echo,
    friendly,
    inventory_option,
    json_option,
    limit_option,
    say_line,
)
from .images import resolve_tag, tag_option


def services_option(func):
    return click.option("--services", metavar="S,...", default=None,
                        help="Only these services (default: every service).")(func)


def wave_options(func):
    func = limit_option(func)
    func = click.option("--canary", metavar="HOST,...", default=None,
                        help="Canary hosts for wave 1 (default: the spec's rollout.canary).")(func)
    func = click.option("--batch", metavar="N|P%", default=None,
                        help="Hosts per later wave: a count or a share (default: the spec's).")(func)
    return func


def pause_option(func):
    return click.option("--pause", metavar="DURATION|manual", default=None,
                        help="After the canary passes: watch it this long (5m) before the batches, "
                             "or `manual`: stop until `rig promote` / `rig abort`; 0: no pause "
                             "(default: the spec's rollout.pause).")(func)


def change_options(func):
    func = break_lock_options(func)
    func = click.option("--no-verify", is_flag=True,
                        help="Skip the testinfra services check afterwards.")(func)
    return func


def print_plan(plan) -> None:
    rows = {(r.host, r.service): r for r in plan.rows}
    for number, wave in enumerate(plan.waves, start=1):
        echo(f"wave {number} ({'canary' if number == 1 else 'batch'}): {', '.join(wave)}")
        for (host, _), r in rows.items():
            if host not in wave:
                continue
            now = f"{r.running_tag} {r.running_digest[7:19]}" if r.running_digest else "(not running)"
            mark = "change" if r.change else "same  "
            why = f" ({'; '.join(r.why)})" if r.why else ""
            gate = f" [gate: /health + {', '.join(r.gate)}]" if r.gate and r.change else ""
            echo(f"  {host:<10} {r.service:<30} {mark} {now} -> {r.tag} {r.digest[7:19]}"
                       f"{why}{gate}")
            if r.change and r.strategy:
                echo(f"  {'':<10} {'':<30} {r.strategy}: {r.strategy_why}")
    for line in plan.skipped:
        echo(f"  {line}")


def print_report(report) -> None:
    """The waves' outcome; exit 130 when interrupted, 1 when failed."""
    from ..errors import RigError

    for line in report.lines:
        echo(line, err=not report.ok)
    if report.paused:
        echo(f"{report.action} {report.label} paused after the canary "
                   f"({report.seconds:.1f} s); locks held. Waves still to go: "
                   + "; ".join(", ".join(wave) for wave in report.paused))
        echo("  rig promote    continue with those waves")
        echo("  rig abort      roll the canary back and release the locks")
        return
    if report.unreleased_locks:
        echo(f"rig: could not release the lock on {', '.join(report.unreleased_locks)}; "
             f"{report.when_back}", err=True)
    if report.interrupted:
        echo(f"rig: {report.action} interrupted after {report.seconds:.1f} s", err=True)
        sys.exit(128 + (report.signal or 2))  # 130 SIGINT, 143 SIGTERM, 129 SIGHUP
    if not report.ok:
        raise RigError(f"{report.action} {report.label} failed after {report.seconds:.1f} s")
    p = report.phases
    echo(f"{report.action} {report.label} done in {report.seconds:.1f} s (connect and "
               f"pre-flight {p['connect_and_preflight']:.2f} s, locks {p['locks']:.2f} s, waves "
               f"{p['waves']:.2f} s with {p['health_gates']:.2f} s in health gates)")
    if report.verify_rc not in (None, 0):
        raise RigError(f"the {report.action} finished but `rig verify --suite services` failed")


@click.command()
@inventory_option
@tag_option
@services_option
@wave_options
@change_options
@click.option("--start-stopped", is_flag=True,
              help="Also start services an operator stopped with `rig stop` (default: leave "
                   "them stopped, and say so).")
@pause_option
@click.pass_obj
@friendly
def rollout(obj: Context, inventory, tag, services, canary, batch, limit, break_lock, force,
            no_verify, start_stopped, pause) -> None:
    """Roll out TAG: canary hosts first, a health gate per service, then batches.

    \b
    Pre-flight (all or nothing): every image at TAG exists in the registry (deployed by
    digest), every host answers, is bootstrapped and has its profile, and a lock is taken on
    every host. On a failed gate the wave's hosts go back to their previous containers and
    later waves are not touched. Ctrl-C stops after the current wave. Each host keeps
    /var/lib/rig/ledger.jsonl and state.json. A re-run of a finished rollout changes nothing.
    Example:
      rig rollout --tag 20261123-1a2b3c4d --services model_ops_coordinator --batch 50%"""
    from ..ops import rollout as ops

    job, tag = obj.job(inventory), resolve_tag(obj, tag)
    opts = ops.options_from(services, limit, canary, batch, break_lock, no_verify, start_stopped,
                            pause, force)
    echo(f"rollout {tag}:")
    print_report(ops.rollout(job, tag, opts, say_line, on_plan=print_plan))


@click.command()
@inventory_option
@services_option
@click.option("--to", "to_tag", metavar="TAG", default=None,
              help="Go to this tag (default: each service's previous version on each host).")
@wave_options
@change_options
@click.pass_obj
@friendly
def rollback(obj: Context, inventory, services, to_tag, canary, batch, limit, break_lock,
             force, no_verify) -> None:
    """Go back to the previous known-good version (from each host's state.json), or to
    --to TAG, through the same waves and health gates as a rollout.

    \b
    Example:
      rig rollback --services real_time_audio_pipeline"""
    from ..ops import rollout as ops

    job = obj.job(inventory)
    opts = ops.options_from(services, limit, canary, batch, break_lock, no_verify, force=force)
    echo(f"rollback to {to_tag or 'previous'}:")
    print_report(ops.rollback(job, to_tag, opts, say_line, on_plan=print_plan))


@click.command()
@inventory_option
@tag_option
@services_option
@wave_options
@json_option
@click.pass_obj
@friendly
def plan(obj: Context, inventory, tag, services, canary, batch, limit, as_json) -> None:
    """What `rig rollout` would do, without doing it: the waves, per host and service the
    current and target tag and digest, what would change, and any pre-flight problem.

    \b
    Example:
      rig plan --tag 20261123-1a2b3c4d"""
    from ..ops import rollout as ops

    job, tag = obj.job(inventory), resolve_tag(obj, tag)
    result = ops.plan(job, tag, ops.options_from(services, limit, canary, batch), say_line)
    if as_json:
        dump(result)
        return
    echo(f"plan {tag} for {', '.join(result.hosts)}:")
    print_plan(result)
    echo(f"{result.changes} change(s); pre-flight passes")


@click.command()
@inventory_option
@click.option("--host", "--limit", "limit", metavar="HOSTS", default=None,
              help="Only these hosts or groups (default: all).")
@click.option("--service", metavar="S", default=None, help="Only this service.")
@click.option("-n", "--lines", "count", default=20, show_default=True, type=click.IntRange(1, 10000),
              help="How many of the newest lines.")
@json_option
@click.pass_obj
@friendly
def history(obj: Context, inventory, limit, service, count, as_json) -> None:
    """Who deployed what, where and when: every host's ledger, merged by time (newest last),
    with each attempt's result (ok, failed and why, rolled_back, rollback_failed).

    \b
    Example:
      rig history --host pc2 --service model_ops_coordinator -n 5"""
    from ..ops.history import history as run
    from ..ops.job import split

    rows = run(obj.job(inventory), split(limit), service, count, say_line)
    if as_json:
        dump(rows)
        return
    for r in rows:
        echo(history_line(r))


def history_line(r: dict) -> str:
    """One ledger row (history.merge made its fields text) as the table shows it."""
    return (f"{(r.get('time') or '?')[:19]}  {r['host']:<8} {r.get('service') or '?':<28} "
            f"{r.get('action') or '?':<13} {r.get('tag') or '-':<26} {r.get('result') or '?':<15} "
            f"{r.get('operator') or '?'}" + (f"  ({r['reason']})" if r.get("reason") else ""))


COMMANDS = [plan, rollout, rollback, history]
