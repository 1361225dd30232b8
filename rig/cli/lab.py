"""rig lab up | down | status."""

from __future__ import annotations

import sys
import time

import click

from .common import CONTEXT, Context, friendly, say


@click.group(context_settings=CONTEXT)
def lab() -> None:
    """The local lab: a Docker engine, a TLS registry with auth, and SSH hosts (mainpc, pc2)
    reached as the `ops` user with sudo, like the real machines.

    Everything the lab makes lives in .lab/ beside the spec (git-ignored) and on the
    10.77.0.0/24 network; `rig lab down` removes all of it."""


@lab.command("up")
@click.option("--hosts", "count", default=2, show_default=True, type=click.IntRange(1, 20),
              help="Number of hosts: mainpc, pc2, then node3, node4, ...")
@click.pass_obj
@friendly
def lab_up(obj: Context, count: int) -> None:
    """Start (or complete) the lab. Idempotent: a second run creates nothing and says so.

    \b
    Example:
      rig lab up --hosts 3"""
    from ..lab.lab import Lab

    started = time.monotonic()
    click.echo(f"lab up ({count} host{'s' if count > 1 else ''}):")
    state = Lab.for_repo(obj.repo).up(count, say)
    click.echo(f"lab ready in {time.monotonic() - started:.1f} s: "
               f"{len(state.hosts)} hosts; `rig --env lab ...` reaches them over SSH")


@lab.command("down")
@click.pass_obj
@friendly
def lab_down(obj: Context) -> None:
    """Remove every container, network, volume, process and file the lab created."""
    from ..lab.lab import Lab

    click.echo("lab down:")
    Lab.for_repo(obj.repo).down(say)
    click.echo("lab removed")


@lab.command("status")
@click.pass_obj
@friendly
def lab_status(obj: Context) -> None:
    """Show each part of the lab and whether it answers. Exit 1 if any part does not."""
    from ..lab.lab import Lab

    rows = Lab.for_repo(obj.repo).status()
    for part, ok, detail in rows:
        click.echo(f"  {part:<14} {'ok  ' if ok else 'DOWN'} {detail}")
    if not all(ok for _, ok, _ in rows):
        sys.exit(1)


COMMANDS = [lab]
