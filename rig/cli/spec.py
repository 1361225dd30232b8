"""rig validate, rig tag."""

from __future__ import annotations

import click

from .common import Context, friendly


@click.command()
@click.option("--overlay", metavar="FILE", help="Also merge an overlay such as lab.yml.")
@click.pass_obj
@friendly
def validate(obj: Context, overlay: str | None) -> None:
    """Check the spec. Exit 0 when valid; else each problem as FILE:LINE: FIELD: MESSAGE, exit 1.

    \b
    Example:
      rig -c ~/fleet/fleet.yml validate --overlay ~/fleet/lab.yml"""
    from ..config import load_fleet

    fleet = load_fleet(obj.config, overlay)
    hosts = ", ".join(f"{h} ({s.profile})" for h, s in fleet.hosts.items())
    click.echo(f"{obj.config}: valid")
    click.echo(f"  hosts     {hosts}")
    click.echo(f"  families  {', '.join(fleet.families)}")
    click.echo(f"  services  {', '.join(f'{n}:{s.port}' for n, s in fleet.services.items())}")
    click.echo(f"  registry  {fleet.registry.host}/{fleet.registry.namespace}")
    click.echo(f"  rollout   canary {', '.join(fleet.rollout.canary)}, batch {fleet.rollout.batch}")


@click.command("tag")
@click.pass_obj
@friendly
def tag_command(obj: Context) -> None:
    """Print the tag a build or rollout would use now: FORCE_IMAGE_TAG, else
    YYYYMMDD-<8-char git sha> (UTC), with -dirty for a work tree with changes."""
    from ..tags import current_tag

    click.echo(current_tag(obj.repo))


COMMANDS = [validate, tag_command]
