"""rig deploy: build, push, verify and roll out in one command."""

from __future__ import annotations

import click

from .common import Context, echo, friendly, inventory_option, say_line
from .images import resolve_tag, tag_option
from .rollout import (
    change_options,
    pause_option,
    print_plan,
    print_report,
    services_option,
    wave_options,
)


@click.command()
@inventory_option
@tag_option
@services_option
@wave_options
@change_options
@click.option("--start-stopped", is_flag=True, help="Also start services an operator stopped.")
@pause_option
@click.pass_obj
@friendly
def deploy(obj: Context, inventory, tag, services, canary, batch, limit, break_lock, force,
           no_verify, start_stopped, pause) -> None:
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
    opts = ops.options_from(services, limit, canary, batch, break_lock, no_verify, start_stopped,
                            pause, force)
    echo(f"deploy {tag}:")
    report = run(job, tag, opts, say_line, on_build_plan=print_build_plan, on_plan=print_plan)
    print_report(report.rollout)
    if report.rollout.paused:
        return
    b, plan = report.build, report.rollout.plan
    echo(f"deploy {tag} done in {report.seconds:.1f} s: "
               + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report.phases.items()))
    echo(f"  images   built {b.built}, reused {b.reused}, present {b.present}; "
               f"{len(b.rows)} of {len(b.rows)} in {b.registry}")
    echo(f"  rollout  {len(plan.waves)} wave(s), {plan.changes} change(s)"
               + (", services suite passed" if report.rollout.verify_rc == 0 else ""))


def print_build_plan(states) -> None:
    echo(f"build ({len(states)} images):")
    for target, state in states:
        echo(f"  {target:<40} {state}")


def _after_pause(verb: str):
    @click.command(verb)
    @inventory_option
    @click.pass_obj
    @friendly
    def command(obj: Context, inventory, no_verify: bool = False) -> None:
        from ..ops import pause as ops

        echo(f"{verb}:")
        if verb == "promote":
            report = ops.promote(obj.job(inventory), say_line, on_plan=print_plan,
                                 verify=not no_verify)
        else:
            report = ops.abort(obj.job(inventory), say_line, on_plan=print_plan)
        print_report(report)

    if verb == "promote":
        command = click.option("--no-verify", is_flag=True,
                               help="Skip the services suite (testinfra) after the waves, as "
                                    "`rig rollout --no-verify` does.")(command)

    command.help = {
        "promote": """Continue a rollout paused after its canary (rollout.pause: manual, or
        --pause manual): the remaining waves, each through its health gates, then the
        services suite. Takes over the paused rollout's locks, and only those.

        \b
        Example:
          rig rollout --pause manual && rig status && rig promote""",
        "abort": """Abandon a rollout paused after its canary: the canary hosts go back to what
        they ran before (through the health gates, ledger lines `abort`), and every paused
        lock is released. Hosts of later waves were never touched. An abort that did not
        finish (killed, a host frozen) keeps the record in its locks: run `rig abort` again
        once it is gone, and it goes on from where the first stopped.

        \b
        Example:
          rig abort""",
    }[verb]
    return command


COMMANDS = [deploy, _after_pause("promote"), _after_pause("abort")]
