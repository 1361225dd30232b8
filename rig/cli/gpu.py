"""rig gpu."""

from __future__ import annotations

import click

from .common import Context, dump, echo, friendly, host_say, inventory_option, json_option, limit_option


@click.command("gpu")
@inventory_option
@limit_option
@json_option
@click.pass_obj
@friendly
def gpu(obj: Context, inventory, limit, as_json) -> None:
    """Each GPU host's card: model, driver and the CUDA it supports, memory used by each
    process (and the container it runs in), and the Xid errors of the last 24 hours.

    \b
    Example:
      rig --env production gpu --limit pc2"""
    from ..ops.gpu import gpu_status
    from ..ops.job import split

    rows = gpu_status(obj.job(inventory), split(limit), host_say)
    if as_json:
        dump(rows)
        return
    if not rows:
        echo("no GPU host selected (profiles without a GPU, or bootstrap.nvidia disabled)")
    for r in rows:
        if r.card is None:
            echo(f"{r.host:<10} no GPU answer: {r.error or 'nvidia-smi listed none'}")
            continue
        echo(f"{r.host:<10} {r.card}, driver {r.driver} (CUDA {r.cuda or '?'}), "
                   f"{r.used_mib} of {r.total_mib} MiB used")
        for user in r.users:
            echo(f"{'':<10}   {user}")
        echo(f"{'':<10}   Xid errors, last 24 h: " + ("; ".join(r.xids) or "none"))


COMMANDS = [gpu]
