"""rig bootstrap, rig verify, rig hosts trust."""

from __future__ import annotations

import sys

import click

from .common import (
    CONTEXT,
    Context,
    break_lock_options,
    echo,
    friendly,
    host_say,
    inventory_option,
    limit_option,
)


@click.command()
@inventory_option
@limit_option
@break_lock_options
@click.pass_obj
@friendly
def bootstrap(obj: Context, inventory: str | None, limit: str | None, break_lock: bool,
              force: bool) -> None:
    """Bring hosts to ready: Docker engine, buildx, daemon.json, registry CA and login, docker
    group, NVIDIA toolkit on GPU hosts, machine profile. Idempotent: a second run changes nothing.

    Pre-flight (nothing changes if any fails): the registry token is set, every host answers
    over SSH with a known host key, sudo needs no password, and it runs Debian 12+/Ubuntu 22+.

    \b
    Example:
      GHCR_TOKEN=... rig --env production bootstrap --limit pc2"""
    from ..ops.hosts import bootstrap as run
    from ..ops.job import split

    report = run(obj.job(inventory), split(limit), host_say,
                 on_start=lambda hosts: echo(f"bootstrap {', '.join(hosts)}:"),
                 break_lock=break_lock, force=force)
    print_converge(report)


def print_converge(report) -> None:
    from ..errors import RigError

    for r in report.results.values():
        state = "FAILED" if not r.ok else ("changed" if r.changed else "ok")
        detail = r.unreachable or f"{len(r.changed)} changed, {r.unchanged} unchanged"
        if r.failed:
            detail += f", failed: {', '.join(r.failed)}"
        if r.not_run:
            detail += f", {r.not_run} not run"
        echo(f"  {r.name:<10} {state:<8} {detail}")
    n, hosts = report.changes, len(report.results)
    echo(f"{n} change{'s' if n != 1 else ''} on {hosts} host{'s' if hosts != 1 else ''} "
               f"in {report.seconds:.1f} s")
    if report.failed:
        raise RigError(f"failed on {', '.join(report.failed)}")


@click.command()
@inventory_option
@limit_option
@click.option("--suite", type=click.Choice(["all", "bootstrap", "services"]), default="all",
              show_default=True, help="bootstrap: hosts only; services: what rollouts started.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
@friendly
def verify(obj: Context, inventory: str | None, limit: str | None, suite: str,
           pytest_args: tuple[str, ...]) -> None:
    """Run the testinfra suite (tests/verify beside the spec) against the hosts.

    \b
    bootstrap: engine running, buildx, daemon.json, machine profile, registry login and pull,
               docker group
    services:  every service on every host runs the digest rig recorded, as 10001:10001,
               with tini as PID 1, and answers its health check with the expected body;
               hosts with no recorded rollout are skipped, with that reason

    \b
    Example:
      rig verify --suite bootstrap -- -k profile"""
    from ..ops.hosts import verify as run
    from ..ops.job import split

    sys.exit(run(obj.job(inventory), suite, pytest_args, split(limit)))


@click.group(context_settings=CONTEXT)
def hosts() -> None:
    """Host keys: rig never accepts an unknown SSH host key silently."""


@hosts.command("trust")
@inventory_option
@click.argument("host")
@click.option("--fingerprint", metavar="SHA256:...", default=None,
              help="The fingerprint you checked out of band; without it rig shows it and asks.")
@click.pass_obj
@friendly
def hosts_trust(obj: Context, inventory: str | None, host: str, fingerprint: str | None) -> None:
    """Add HOST's SSH key to the known_hosts file the inventory names (default
    ~/.ssh/known_hosts, or RIG_KNOWN_HOSTS), after its fingerprint is confirmed.

    \b
    Example:
      rig --env production hosts trust mainpc --fingerprint SHA256:AbC...xyz"""
    from ..ops.hosts import trust

    def confirm(key) -> bool:
        echo(f"{host} ({key.known_hosts_name}) offers {key.key_type} {key.fingerprint}")
        return click.confirm("Trust this key?", default=False)

    key, what = trust(obj.job(inventory), host, fingerprint, confirm)
    echo(f"{host}: {key.key_type} {key.fingerprint} {what}")


COMMANDS = [bootstrap, verify, hosts]
