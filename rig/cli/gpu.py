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
    process (and the container it runs in), and the Xid errors of the last 24 hours. Exits 1
    when a GPU host's card does not answer (no driver, nvidia-smi missing or failing).

    \b
    Example:
      rig --env production gpu --limit pc2"""
    from ..errors import RigError
    from ..ops.gpu import gpu_status
    from ..ops.job import split

    rows = gpu_status(obj.job(inventory), split(limit), host_say)
    if as_json:
        dump(rows)
    elif not rows:
        echo("no GPU host selected (profiles without a GPU, or bootstrap.nvidia disabled)")
    for r in rows if not as_json else ():
        if r.card is None:
            echo(f"{r.host:<10} no GPU answer: {r.error or 'nvidia-smi listed none'}")
            continue
        echo(f"{r.host:<10} {r.card}, driver {r.driver or '?'} (CUDA {r.cuda or '?'}), "
             f"{r.used_mib if r.used_mib is not None else '?'} of "
             f"{r.total_mib if r.total_mib is not None else '?'} MiB used")
        for user in r.users:
            echo(f"{'':<10}   {user}")
        echo(f"{'':<10}   Xid errors, last 24 h: " + ("; ".join(r.xids) or "none"))
    silent = [r.host for r in rows if r.card is None]
    if silent:   # a GPU host whose card does not answer is a problem, not a status line
        raise RigError(f"no working GPU on {', '.join(silent)}")


COMMANDS = [gpu]
