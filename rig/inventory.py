"""Inventory for pyinfra, built from fleet.yml: which hosts, in which groups, reached how.

The spec says what each host is (profile, groups); the inventory adds only how to reach it:
production addresses come from the environment or an untracked file, the lab's from its state.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .config import Fleet, load_fleet
from .errors import RigError
from .lab.layout import LabPaths, extra_host_spec
from .lab.state import LabState

HostEntry = tuple[str, dict]


def groups_for(fleet: Fleet, connection: dict[str, dict]) -> dict[str, list[HostEntry]]:
    """pyinfra groups (name -> [(host, data)]) for every fleet host that has connection data."""
    entries = {host: (host, {**connection[host], "rig_host": host}) for host in connection}
    groups: dict[str, list[HostEntry]] = {"all": [entries[h] for h in fleet.hosts if h in entries]}
    for group, members in fleet.groups().items():
        groups[group] = [entries[h] for h in members if h in entries]
    return groups


# -- the lab ----------------------------------------------------------------------------------
def lab_fleet(repo: Path) -> Fleet:
    """fleet.yml + lab.yml + the extra hosts the lab is running (node3...)."""
    state = LabState.load(LabPaths.for_repo(repo))
    extra = {}
    for host in state.hosts if state else []:
        spec = extra_host_spec(host)
        if spec:
            extra[host] = spec
    return load_fleet(repo / "fleet.yml", repo / "lab.yml", extra_hosts=extra)


def lab_connection(repo: Path) -> dict[str, dict]:
    paths = LabPaths.for_repo(repo)
    state = LabState.load(paths)
    if state is None or not state.hosts:
        raise RigError(f"the lab is not up ({paths.state_file} missing): run `rig lab up`")
    return {
        host: {
            "ssh_hostname": address,
            "ssh_user": "root",
            "ssh_key": str(paths.ssh_dir / "id_ed25519"),
            "ssh_known_hosts_file": str(paths.ssh_dir / "known_hosts"),
            "ssh_strict_host_key_checking": "yes",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
        }
        for host, address in state.hosts.items()
    }


def lab_groups(repo: Path) -> dict[str, list[HostEntry]]:
    return groups_for(lab_fleet(repo), lab_connection(repo))


# -- production -------------------------------------------------------------------------------
def parse_target(value: str) -> dict:
    """'ops@192.168.1.10:2222' -> ssh_user, ssh_hostname, ssh_port (user and port optional)."""
    user, _, rest = value.rpartition("@")
    hostname, _, port = rest.partition(":")
    if not hostname or (port and not port.isdigit()):
        raise ValueError(value)
    data: dict = {"ssh_hostname": hostname}
    if user:
        data["ssh_user"] = user
    if port:
        data["ssh_port"] = int(port)
    return data


def production_connection(repo: Path, fleet: Fleet, environ=os.environ) -> dict[str, dict]:
    """RIG_HOST_<NAME>=user@address[:port] wins; else inventory/hosts.local.yml (untracked):
    `mainpc: {address: 192.168.1.10, user: ops, port: 22, sudo: true}`."""
    local_file = repo / "inventory" / "hosts.local.yml"
    local = {}
    if local_file.is_file():
        local = yaml.safe_load(local_file.read_text()) or {}
    connection, missing = {}, []
    for host in fleet.hosts:
        variable = f"RIG_HOST_{host.upper().replace('-', '_').replace('.', '_')}"
        if environ.get(variable):
            try:
                connection[host] = parse_target(environ[variable])
            except ValueError:
                raise RigError(f"{variable}={environ[variable]!r}: expected user@address[:port]") from None
        elif isinstance(local.get(host), dict) and local[host].get("address"):
            entry = local[host]
            connection[host] = {"ssh_hostname": entry["address"]}
            if entry.get("user"):
                connection[host]["ssh_user"] = entry["user"]
            if entry.get("port"):
                connection[host]["ssh_port"] = int(entry["port"])
            if entry.get("sudo"):
                connection[host]["_sudo"] = True
        else:
            missing.append((host, variable))
    if missing:
        raise RigError(
            *(f"inventory/production.py: no address for host {h!r}: set {v}=user@address[:port] "
              f"or add `{h}: {{address: ...}}` to inventory/hosts.local.yml" for h, v in missing)
        )
    return connection


def production_groups(repo: Path) -> dict[str, list[HostEntry]]:
    fleet = load_fleet(repo / "fleet.yml")
    return groups_for(fleet, production_connection(repo, fleet))


def fleet_for(repo: Path, inventory: str) -> Fleet:
    """The spec an inventory's hosts carry, without connecting: inventory/lab.py adds lab.yml
    (group_data/lab.py), any other inventory uses fleet.yml as it is (group_data/all.py)."""
    if Path(inventory).stem == "lab":
        return lab_fleet(repo)
    return load_fleet(repo / "fleet.yml")
