"""rig deploy: build, push, verify and roll out in one command."""

from __future__ import annotations

import click

from .common import Context, friendly, inventory_option, say_line
from .images import resolve_tag, tag_option
from .rollout import change_options, print_plan, print_report, services_option, wave_options


@click.command()
@inventory_option
@tag_option
@services_option
@wave_options
@change_options
@click.option("--start-stopped", is_flag=True, help="Also start services an operator stopped.")
@click.pass_obj
@friendly
def deploy(obj: Context, inventory, tag, services, canary, batch, limit, break_lock, no_verify,
           start_stopped) -> None:
    """The one command: validate the spec, build and push what changed (a dirty work tree is
    refused), check every image in the registry, roll out canary first then batches with
    health gates, run the services suite, and print one summary with the time per phase.

    \b
    Example:
      rig deploy                         # tag YYYYMMDD-<git sha>, every service
      rig deploy --services model_ops_coordinator"""
    from ..ops import rollout as ops
    from ..ops.deploy import deploy as run

    job, tag = obj.job(inventory), resolve_tag(obj, tag)
    opts = ops.options_from(services, limit, canary, batch, break_lock, no_verify, start_stopped)
    click.echo(f"deploy {tag}:")
    report = run(job, tag, opts, say_line, on_build_plan=print_build_plan, on_plan=print_plan)
    print_report(report.rollout)
    b, plan = report.build, report.rollout.plan
    click.echo(f"deploy {tag} done in {report.seconds:.1f} s: "
               + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report.phases.items()))
    click.echo(f"  images   built {b.built}, reused {b.reused}, present {b.present}; "
               f"{len(b.rows)} of {len(b.rows)} in {b.registry}")
    click.echo(f"  rollout  {len(plan.waves)} wave(s), {plan.changes} change(s)"
               + (", services suite passed" if report.rollout.verify_rc == 0 else ""))


def print_build_plan(states) -> None:
    click.echo(f"build ({len(states)} images):")
    for target, state in states:
        click.echo(f"  {target:<40} {state}")


COMMANDS = [deploy]
