"""`rig verify`: the testinfra suite in tests/verify, run against an environment's hosts.

Hosts, addresses and the spec come from the same loader and inventory rig uses (RIG_CONFIG,
RIG_ENV, RIG_LIMIT set by `rig verify`), so the same checks run on the lab and on MainPC/PC2,
through the same user and sudo."""

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


def load_targets(environ=os.environ):
    """(fleet, [Target]) for the spec and environment `rig verify` names."""
    from .inventory import load_spec, targets

    config = Path(environ.get("RIG_CONFIG", "fleet.yml"))
    env = environ.get("RIG_ENV", "lab")
    limit = [h for h in environ.get("RIG_LIMIT", "").split(",") if h]
    fleet = load_spec(config, env)
    result = []
    for t in targets(fleet, env, environ):
        if limit and t.name not in limit:
            continue
        result.append(ssh_target(t))
    return fleet, result


def ssh_target(t) -> Target:
    """How OpenSSH reaches an inventory target (rig.inventory.Target), as pyinfra does."""
    data = t.data
    return Target(name=t.name, hostname=data.get("ssh_hostname") or t.name,
                  user=data.get("ssh_user") or "root", port=int(data.get("ssh_port") or 22),
                  key=data.get("ssh_key"), known_hosts=data.get("ssh_known_hosts_file"),
                  sudo=bool(data.get("_sudo")))


def ssh_argv(t: Target, *options: str) -> list[str]:
    """`ssh` to a target with its user, port, key and strict host keys, for an interactive
    session (rig exec -it)."""
    argv = ["ssh", *options, "-p", str(t.port), "-o", "StrictHostKeyChecking=yes"]
    if t.key:
        argv += ["-i", t.key, "-o", "IdentitiesOnly=yes"]
    if t.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={t.known_hosts}"]
    return [*argv, f"{t.user}@{t.hostname}"]


def _value(value: str) -> str:
    """An ssh_config value: one line, no spaces or quotes that could add a directive."""
    if any(c in value for c in "\r\n\t \"'#") or not value:
        raise ValueError(f"ssh_config value {value!r}: must be one word")
    return value


def ssh_config(targets: list[Target], control_dir: str) -> str:
    """An ssh_config for testinfra's ssh backend: one Host block per target, strict host keys,
    one multiplexed connection per host, its socket in a private folder. A host that stops
    answering (frozen) ends its connection within 15 s, and a new one gives up after 10 s
    (TCP and the SSH banner alike): the suite fails it instead of waiting for ever."""
    blocks = []
    for t in targets:
        lines = [f"Host {_value(t.name)}", f"  HostName {_value(t.hostname)}",
                 f"  User {_value(t.user)}", f"  Port {int(t.port)}",
                 "  StrictHostKeyChecking yes", "  BatchMode yes",
                 "  ControlMaster auto", f"  ControlPath {_value(control_dir)}/%C",
                 "  ControlPersist 60", "  ConnectTimeout 10", "  ServerAliveInterval 5",
                 "  ServerAliveCountMax 3"]
        if t.key:
            lines += [f"  IdentityFile {_value(t.key)}", "  IdentitiesOnly yes"]
        if t.known_hosts:
            lines.append(f"  UserKnownHostsFile {_value(t.known_hosts)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def close_masters_argv(config: str, targets: list[Target]) -> list[list[str]]:
    """`ssh -O exit` for each target: the multiplexed connections end with the suite, not
    ControlPersist seconds after it (they kept a login open on each host for a minute)."""
    return [["ssh", "-F", config, "-O", "exit", _value(t.name)] for t in targets]


def write_ssh_config(targets: list[Target]) -> str:
    """The config in a private (0700) folder that also holds the control sockets; a short path
    (sockets are limited to ~108 bytes)."""
    folder = tempfile.mkdtemp(prefix="rig-v-", dir="/tmp")
    path = os.path.join(folder, "ssh_config")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(ssh_config(targets, folder))
    return path
