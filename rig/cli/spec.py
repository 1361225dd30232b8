"""rig validate, rig tag."""

from __future__ import annotations

import click

from .common import Context, echo, friendly


@click.command()
@click.option("--overlay", metavar="FILE", help="Check fleet.yml with this overlay merged in, "
              "instead of the environments' own files.")
@click.pass_obj
@friendly
def validate(obj: Context, overlay: str | None) -> None:
    """Check the spec exactly as an environment runs it: production is fleet.yml; the lab is
    fleet.yml with lab.yml merged in (and the lab's extra scale hosts). With --env (or RIG_ENV)
    that environment; without, every environment whose files are there. Exit 0 when valid;
    else each problem as FILE:LINE: FIELD: MESSAGE, exit 1.

    \b
    Example:
      rig validate                       # production and the lab
      rig --env production validate
      rig -c ~/fleet/fleet.yml validate --overlay ~/fleet/staging.yml"""
    import os

    from ..config import load_fleet
    from ..inventory import load_spec, resolve_env

    if overlay:
        checked = [(f"{obj.config} + {overlay}", load_fleet(obj.config, overlay))]
    else:
        chosen = obj.env_option or os.environ.get("RIG_ENV")
        envs = [resolve_env(chosen)] if chosen else \
            ["production"] + (["lab"] if (obj.repo / "lab.yml").is_file() else [])
        checked = [(f"{obj.config}" + (" + lab.yml" if env == "lab" else "") + f" ({env})",
                    load_spec(obj.config, env)) for env in envs]
    for label, fleet in checked:
        hosts = ", ".join(f"{h} ({s.profile})" for h, s in fleet.hosts.items())
        echo(f"{label}: valid")
        echo(f"  hosts     {hosts}")
        echo(f"  families  {', '.join(fleet.families)}")
        echo(f"  services  {', '.join(f'{n}:{s.port}' for n, s in fleet.services.items())}")
        echo(f"  registry  {fleet.registry.host}/{fleet.registry.namespace}")
        echo(f"  rollout   canary {', '.join(fleet.rollout.canary)}, batch {fleet.rollout.batch}")


@click.command("tag")
@click.pass_obj
@friendly
def tag_command(obj: Context) -> None:
    """Print the tag a build or rollout would use now: FORCE_IMAGE_TAG, else
    YYYYMMDD-<8-char git sha> (UTC), with -dirty for a work tree with changes."""
    from ..tags import current_tag

    echo(current_tag(obj.repo))


COMMANDS = [validate, tag_command]
