"""Which hosts, in which groups, reached how: built from the one loaded spec.

The spec says what each host is (profile, groups); the inventory adds only how to reach it:
production addresses come from the environment or an untracked file, the lab's from its state.
Two environments:
    lab          fleet.yml + lab.yml + the lab's extra nodes; hosts from .lab/state.json
    production   fleet.yml; hosts from RIG_HOST_<NAME> or inventory/hosts.local.yml
`rig` builds pyinfra's Inventory from these targets itself; inventory/lab.py and
inventory/production.py turn the same targets into groups for a plain `pyinfra` run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import Fleet, load_fleet
from .errors import RigError
from .lab.layout import LabPaths, extra_host_spec
from .lab.state import LabState

ENVIRONMENTS = ("lab", "production")
LAB_USER = "ops"
HostEntry = tuple[str, dict]


@dataclass(frozen=True)
class Target:
    """One host rig can reach: its name and pyinfra host data (ssh_*, _sudo, rig_fleet)."""

    name: str
    data: dict


def resolve_env(env: str | None, inventory: str | None = None, environ=os.environ,
                default: str = "lab") -> str:
    """--env, else RIG_ENV, else from a legacy -i inventory/<env>.py, else `default` (the lab,
    as rig has always defaulted to inventory/lab.py)."""
    value = env or environ.get("RIG_ENV")
    if not value and inventory:
        value = Path(inventory).stem
    value = value or default
    if value not in ENVIRONMENTS:
        raise RigError(f"environment {value!r}: expected one of {', '.join(ENVIRONMENTS)} "
                       "(--env or RIG_ENV)")
    return value


def load_spec(config: Path, env: str) -> Fleet:
    """The spec of an environment: fleet.yml, plus lab.yml and the lab's extra nodes in the lab."""
    if env != "lab":
        return load_fleet(config)
    repo = config.resolve().parent
    state = LabState.load(LabPaths.for_repo(repo))
    extra = {h: spec for h in (state.hosts if state else []) if (spec := extra_host_spec(h))}
    return load_fleet(config, repo / "lab.yml", extra_hosts=extra)


def targets(fleet: Fleet, env: str, environ=os.environ) -> list[Target]:
    """Every fleet host with how to reach it, in fleet order."""
    connection = (lab_connection(fleet.base_dir) if env == "lab"
                  else production_connection(fleet.base_dir, fleet, environ))
    groups = fleet.groups()
    retries = {"ssh_connect_retries": 1, "ssh_connect_retry_min_delay": 0.5,
               "ssh_connect_retry_max_delay": 1,
               # every operation's commands get the spec's deadline (pyinfra's `_timeout`), and
               # the SSH handshake its own (a frozen host accepts TCP but never answers).
               # pyinfra's `_timeout` bounds reading a command's output only: opening the
               # channel for the next command waits paramiko's channel_timeout (an hour by
               # default), so a host frozen between two commands gets host_timeout there too
               "_timeout": int(fleet.rollout.host_timeout),
               "ssh_paramiko_connect_kwargs": {
                   "banner_timeout": 10, "auth_timeout": 10,
                   "channel_timeout": float(fleet.rollout.host_timeout)}}
    return [Target(h, {**retries, **connection[h], "rig_fleet": fleet, "rig_host": h,
                       "rig_groups": [g for g, members in groups.items() if h in members]})
            for h in fleet.hosts if h in connection]


def groups_for(targets_: list[Target]) -> dict[str, list[HostEntry]]:
    """pyinfra inventory-file groups (name -> [(host, data)]) for a plain `pyinfra` run."""
    groups: dict[str, list[HostEntry]] = {"all": [(t.name, t.data) for t in targets_]}
    for t in targets_:
        for group in t.data["rig_groups"]:
            groups.setdefault(group, []).append((t.name, t.data))
    return groups


def inventory_groups(repo: Path, env: str) -> dict[str, list[HostEntry]]:
    """What inventory/<env>.py exports: the spec loaded once, through the same function."""
    return groups_for(targets(load_spec(repo / "fleet.yml", env), env))


# -- the lab ----------------------------------------------------------------------------------
def lab_connection(repo: Path) -> dict[str, dict]:
    """The lab's hosts as MainPC and PC2 are reached: the `ops` user with passwordless sudo
    (root login is refused on lab hosts), strict host keys from the lab's known_hosts."""
    paths = LabPaths.for_repo(repo)
    state = LabState.load(paths)
    if state is None or not state.hosts:
        raise RigError(f"the lab is not up ({paths.state_file} missing): run `rig lab up`")
    return {
        host: {
            "ssh_hostname": address,
            "ssh_user": LAB_USER,
            "_sudo": True,
            "ssh_key": str(paths.ssh_dir / "id_ed25519"),
            "ssh_known_hosts_file": str(paths.ssh_dir / "known_hosts"),
            "ssh_strict_host_key_checking": "yes",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
        }
        for host, address in state.hosts.items()
    }


# -- production -------------------------------------------------------------------------------
def parse_target(value: str) -> dict:
    """'ops@192.168.1.10:2222' -> ssh_user, ssh_hostname, ssh_port (user and port optional)."""
    user, _, rest = value.rpartition("@")
    hostname, _, port = rest.partition(":")
    if not hostname or (port and not port.isdigit()) or any(c in value for c in " \t\r\n"):
        raise ValueError(value)
    data: dict = {"ssh_hostname": hostname}
    if user:
        data["ssh_user"] = user
    if port:
        data["ssh_port"] = int(port)
    return data


def known_hosts_file(environ=os.environ) -> str:
    return environ.get("RIG_KNOWN_HOSTS") or str(Path("~/.ssh/known_hosts").expanduser())


def _with_defaults(data: dict, environ) -> dict:
    """Strict host keys against the operator's known_hosts (never accepted silently), and
    sudo whenever the SSH user is not root, unless the host says `sudo: false`."""
    data = {"ssh_strict_host_key_checking": "yes",
            "ssh_known_hosts_file": known_hosts_file(environ), **data}
    if environ.get("RIG_SSH_KEY") and "ssh_key" not in data:
        data["ssh_key"] = environ["RIG_SSH_KEY"]
    if "_sudo" not in data:
        data["_sudo"] = data.get("ssh_user", "root") != "root"
    return data


def _local_entry(host: str, entry: dict) -> dict:
    data = {"ssh_hostname": str(entry["address"])}
    for key, field in (("user", "ssh_user"), ("key", "ssh_key"),
                       ("known_hosts", "ssh_known_hosts_file")):
        if entry.get(key):
            data[field] = str(entry[key])
    if entry.get("port"):
        data["ssh_port"] = int(entry["port"])
    if "sudo" in entry:
        data["_sudo"] = bool(entry["sudo"])
    for value in data.values():
        if isinstance(value, str) and any(c in value for c in "\r\n\t "):
            raise RigError(f"inventory/hosts.local.yml: {host}: {value!r} has whitespace")
    return data


def production_connection(repo: Path, fleet: Fleet, environ=os.environ) -> dict[str, dict]:
    """RIG_HOST_<NAME>=user@address[:port] wins; else inventory/hosts.local.yml (untracked):
    `mainpc: {address: 192.168.1.10, user: ops, port: 22, sudo: true, key: ~/.ssh/id_ops}`."""
    local_file = repo / "inventory" / "hosts.local.yml"
    local = {}
    if local_file.is_file():
        local = yaml.safe_load(local_file.read_text()) or {}
    connection, missing = {}, []
    for host in fleet.hosts:
        variable = f"RIG_HOST_{host.upper().replace('-', '_').replace('.', '_')}"
        if environ.get(variable):
            try:
                data = parse_target(environ[variable])
            except ValueError:
                raise RigError(f"{variable}={environ[variable]!r}: expected user@address[:port]") from None
        elif isinstance(local, dict) and isinstance(local.get(host), dict) and local[host].get("address"):
            data = _local_entry(host, local[host])
        else:
            missing.append((host, variable))
            continue
        connection[host] = _with_defaults(data, environ)
    if missing:
        raise RigError(
            *(f"production: no address for host {h!r}: set {v}=user@address[:port] "
              f"or add `{h}: {{address: ...}}` to inventory/hosts.local.yml" for h, v in missing)
        )
    return connection
