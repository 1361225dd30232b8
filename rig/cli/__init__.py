"""`rig`: the command line. Each command parses its options, calls one function of rig.ops,
and prints what it returns (or dumps it as JSON). No host selection, orchestration, verdicts or
policy here. User mistakes and unreachable parts are RigError: plain lines, exit 1."""

from __future__ import annotations

import sys

import click

from .common import CONTEXT, Context

LOCAL_VERBS = frozenset({"validate", "tag", "keys"})
"""Verbs that reach no host and no registry: they start without gevent (about 0.1 s)."""


def patch_for_hosts(verb: str | None) -> bool:
    """pyinfra runs hosts in gevent greenlets, so the standard library (socket, ssl, threads)
    must be gevent's before requests, paramiko or pyinfra import it, as pyinfra's own CLI does.
    Registering the verbs imports none of them (tests/unit/test_cli.py checks), so patching
    here, once the verb is known, is early enough. Returns whether it patched."""
    if verb in LOCAL_VERBS:
        return False
    from gevent import monkey

    if "ssl" in sys.modules and not monkey.is_module_patched("ssl"):
        raise RuntimeError("rig: ssl was imported before gevent patched it (an import at the "
                           "top of a rig.cli module?)")
    monkey.patch_all()
    return True


@click.group(context_settings=CONTEXT)
@click.option("-c", "--config", default="fleet.yml", show_default=True, metavar="FILE",
              help="The fleet spec; its folder holds profiles/, inventory/, tests/verify/ and "
                   "the lab state. Works from any directory.")
@click.option("-e", "--env", type=click.Choice(["lab", "production"]), default=None,
              help="Which hosts: the local lab, or MainPC/PC2 (default: RIG_ENV, else the "
                   "-i inventory's name, else lab).")
@click.version_option(package_name="rig")
@click.pass_context
def main(ctx: click.Context, config: str, env: str | None) -> None:
    """rig: provision and roll out a containerised GPU fleet, declaratively.

    \b
    Typical flow:
      rig validate                       check fleet.yml and profiles/
      rig lab up                         start the local lab (engine, registry, hosts)
      rig bootstrap                      Docker, buildx, daemon.json, registry login, profiles
      rig build --push                   build family and service images, push them
      rig images verify                  every expected image is in the registry
      rig plan                           what a rollout would change, wave by wave
      rig rollout                        canary first, health gate, then batches
      rig status                         what runs where, healthy or not
    Production: `rig --env production ...` with RIG_HOST_MAINPC=ops@192.168.1.10 (see README).
    The tag defaults to YYYYMMDD-<git sha> (`rig tag`); --tag or FORCE_IMAGE_TAG override it.
    """
    patch_for_hosts(ctx.invoked_subcommand)
    ctx.obj = Context(config, env)


def _register() -> None:
    from . import day2, deploy, gpu, hosts, images, lab, rollout, service, spec, supply

    for module in (spec, lab, hosts, images, supply, rollout, deploy, service, day2, gpu):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
