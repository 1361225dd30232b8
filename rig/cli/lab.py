"""rig lab up | down | status."""

from __future__ import annotations

import sys
import time

import click

from .common import CONTEXT, Context, echo, friendly, say


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
    echo(f"lab up ({count} host{'s' if count > 1 else ''}):")
    state = Lab.for_repo(obj.repo).up(count, say, gpus=_profile_gpus(obj, count))
    echo(f"lab ready in {time.monotonic() - started:.1f} s: "
               f"{len(state.hosts)} hosts; `rig --env lab ...` reaches them over SSH")


def _profile_gpus(obj: Context, count: int) -> dict:
    """host -> the GPU of its machine profile (the lab's extra nodes play PC2)."""
    from ..config import load_fleet
    from ..lab.layout import extra_host_spec, host_names

    fleet = load_fleet(obj.config, obj.repo / "lab.yml")
    gpus = {}
    for host in host_names(count):
        profile = fleet.hosts[host].profile if host in fleet.hosts else \
            (extra_host_spec(host) or {}).get("profile")
        spec = fleet.profiles.get(profile) if profile else None
        if spec is not None and spec.gpu is not None:
            gpus[host] = spec.gpu
    return gpus


@lab.command("gpu")
@click.argument("host")
@click.option("--driver", metavar="VERSION", default=None,
              help="The driver nvidia-smi reports (e.g. 470.256.02: too old for CUDA 12).")
@click.option("--used-mib", type=click.IntRange(0, 2**31), default=None,
              help="Memory other processes use on the card, in MiB.")
@click.option("--missing/--present", default=None,
              help="nvidia-smi fails as with no driver loaded (exit 9), or answers again.")
@click.option("--reset", is_flag=True, help="Back to the profile's GPU and the lab's driver.")
@click.pass_obj
@friendly
def lab_gpu(obj: Context, host, driver, used_mib, missing, reset) -> None:
    """Change what a lab host's GPU stand-in says: lab hosts have no GPU; an nvidia-smi
    stand-in answers rig's queries in nvidia-smi's format from /etc/rig-lab/gpu.json, for
    the GPU of the host's profile (MainPC: RTX 4090, PC2: RTX 3060).

    \b
    Example:
      rig lab gpu pc2 --driver 470.256.02    # rollouts refuse CUDA 12 images at pre-flight
      rig lab gpu pc2 --used-mib 11000       # the card is busy
      rig lab gpu pc2 --missing              # no GPU: rig verify --suite bootstrap fails
      rig lab gpu pc2 --reset"""
    import re

    from ..errors import RigError
    from ..lab.lab import Lab

    gpus = _profile_gpus(obj, 20)
    if host not in gpus:
        raise RigError(f"{host}: not a lab host with a GPU in its profile ({', '.join(gpus)})")
    if driver is not None and not re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,4}){0,2}", driver):
        raise RigError(f"--driver {driver[:40]!r}: a driver version as nvidia-smi prints it, "
                       "such as 535.129.03 or 470.256.02")
    if used_mib is not None and used_mib > gpus[host].memory_mib:
        raise RigError(f"--used-mib {used_mib}: more than {host}'s {gpus[host].model} has "
                       f"({gpus[host].memory_mib} MiB)")
    changes = {k: v for k, v in (("driver", driver), ("used_mib", used_mib),
                                 ("missing", missing)) if v is not None}
    state = Lab.for_repo(obj.repo).gpu(host, gpus[host], reset=reset, **changes)
    used = state["used_mib"] + sum(a.get("used_mib", 0) for a in state.get("apps", []))
    echo(f"{host}: {state['name']}, {state['memory_mib']} MiB ({used} MiB used), driver "
               f"{state['driver']} (CUDA {state['cuda']})"
               + ("; nvidia-smi fails: no driver" if state["missing"] else ""))


@lab.command("down")
@click.pass_obj
@friendly
def lab_down(obj: Context) -> None:
    """Remove every container, network, volume, process and file the lab created."""
    from ..lab.lab import Lab

    echo("lab down:")
    Lab.for_repo(obj.repo).down(say)
    echo("lab removed")


@lab.command("status")
@click.pass_obj
@friendly
def lab_status(obj: Context) -> None:
    """Show each part of the lab and whether it answers. Exit 1 if any part does not."""
    from ..lab.lab import Lab

    rows = Lab.for_repo(obj.repo).status()
    for part, ok, detail in rows:
        echo(f"  {part:<14} {'ok  ' if ok else 'DOWN'} {detail}")
    if not all(ok for _, ok, _ in rows):
        sys.exit(1)


COMMANDS = [lab]
