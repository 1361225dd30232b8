"""`rig verify`: the testinfra suite in tests/verify, run against any inventory's hosts.

Hosts, addresses and the spec come from the inventory file through pyinfra (group_data
included), so the same checks run on the lab and on MainPC/PC2."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    name: str
    hostname: str
    user: str
    port: int
    key: str | None
    known_hosts: str | None
    sudo: bool


def load_targets(repo: Path, inventory_file: str):
    """(fleet, [Target]) from an inventory file, the way `rig bootstrap` reads it."""
    import sys

    from pyinfra.api import Config, State
    from pyinfra.context import ctx_config, ctx_state
    from pyinfra_cli.inventory import make_inventory

    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    state = State()
    ctx_state.set(state)
    ctx_config.set(Config())
    inventory = make_inventory(str(repo / inventory_file), cwd=str(repo),
                               group_data_directories=[str(repo / "group_data")])
    targets, fleet = [], None
    for host in inventory:
        data = host.data
        fleet = data.rig_fleet
        targets.append(Target(
            name=data.get("rig_host") or host.name,
            hostname=data.get("ssh_hostname") or host.name,
            user=data.get("ssh_user") or "root",
            port=int(data.get("ssh_port") or 22),
            key=data.get("ssh_key"),
            known_hosts=data.get("ssh_known_hosts_file"),
            sudo=bool(data.get("_sudo")),
        ))
    return fleet, targets


def ssh_config(targets: list[Target]) -> str:
    """An ssh_config for testinfra's ssh backend: one Host block per target, strict host keys,
    one multiplexed connection per host."""
    blocks = []
    for t in targets:
        lines = [f"Host {t.name}", f"  HostName {t.hostname}", f"  User {t.user}",
                 f"  Port {t.port}", "  StrictHostKeyChecking yes", "  BatchMode yes",
                 "  ControlMaster auto", "  ControlPath /tmp/rig-verify-%C", "  ControlPersist 60"]
        if t.key:
            lines += [f"  IdentityFile {t.key}", "  IdentitiesOnly yes"]
        if t.known_hosts:
            lines.append(f"  UserKnownHostsFile {t.known_hosts}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_ssh_config(targets: list[Target]) -> str:
    handle, path = tempfile.mkstemp(prefix="rig-verify-", suffix=".ssh_config")
    with os.fdopen(handle, "w") as f:
        f.write(ssh_config(targets))
    return path
