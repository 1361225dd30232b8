"""Host keys are never accepted silently: an unknown key fails with its fingerprint and the one
command that trusts it; a changed key is refused loudly; `rig hosts trust` adds a key to the
known_hosts file the inventory names, after the operator confirmed the fingerprint."""

from __future__ import annotations

import base64
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ..errors import RigError
from ..inventory import Target


@dataclass
class HostKey:
    host: str
    address: str
    port: int
    key_type: str
    key_b64: str

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(base64.b64decode(self.key_b64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    @property
    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def known_hosts_line(self) -> str:
        return f"{self.known_hosts_name} {self.key_type} {self.key_b64}\n"


def scan(target: Target, timeout: float = 10) -> HostKey:
    """The host key the server offers (no authentication, nothing sent but the SSH handshake)."""
    address = target.data.get("ssh_hostname") or target.name
    port = int(target.data.get("ssh_port") or 22)
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as e:
        raise RigError(f"{target.name}: cannot reach {address}:{port}: {e.strerror or e}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
    except paramiko.SSHException as e:
        raise RigError(f"{target.name}: SSH handshake with {address}:{port} failed: {e}") from None
    finally:
        transport.close()
    return HostKey(target.name, address, port, key.get_name(), key.get_base64())


def describe_connect_error(target: Target, message: str) -> list[str]:
    """One or two lines for a host that did not connect, with what to run next."""
    if "not found in known_hosts" in message or "No host key" in message:
        try:
            key = scan(target)
            seen = f"it offers {key.key_type} {key.fingerprint}"
        except RigError as e:
            seen = str(e)
        return [f"{target.name}: unknown host key ({seen}); nothing was changed",
                f"  check it out of band, then: rig hosts trust {target.name} "
                f"--fingerprint <SHA256:...>"]
    if "does not match" in message or "host key error" in message.lower():
        return [f"{target.name}: HOST KEY CHANGED: {message}; refusing to connect",
                "  if the host was reinstalled, remove the old key from "
                f"{target.data.get('ssh_known_hosts_file', 'known_hosts')} and trust the new one"]
    return [f"{target.name}: unreachable: {message}"]


def trust(target: Target, fingerprint: str | None, confirm) -> tuple[HostKey, str]:
    """Add the host's key to its known_hosts after the fingerprint is confirmed (given, or
    `confirm(key)` answered yes). Returns (key, what happened)."""
    key = scan(target)
    if fingerprint is not None and fingerprint != key.fingerprint:
        raise RigError(f"{target.name}: the host offers {key.fingerprint}, not {fingerprint}; "
                       "nothing was trusted")
    if fingerprint is None and not confirm(key):
        raise RigError(f"{target.name}: not trusted")
    path = Path(target.data.get("ssh_known_hosts_file") or "~/.ssh/known_hosts").expanduser()
    known = paramiko.HostKeys()
    if path.is_file():
        known.load(str(path))
    existing = known.lookup(key.known_hosts_name) or {}
    if key.key_type in existing:
        if existing[key.key_type].get_base64() == key.key_b64:
            return key, f"already trusted in {path}"
        raise RigError(f"{target.name}: {path} holds another {key.key_type} key for "
                       f"{key.known_hosts_name}: remove it first (ssh-keygen -R)")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(key.known_hosts_line())
    return key, f"added to {path}"
