"""The registry standing in for GHCR: Debian's docker-registry, TLS from the lab CA, htpasswd."""

from __future__ import annotations

import secrets

import bcrypt
import yaml

from ..errors import RigError
from ..registry import RegistryClient
from .layout import GATEWAY, REGISTRY, REGISTRY_PORT, REGISTRY_USER, LabPaths
from .pki import make_server_cert, write_private
from .system import pid_alive, start_daemon, stop_daemon, wait_for


def registry_config(paths: LabPaths, http_secret: str) -> dict:
    """docker-registry (distribution 2.8) config: listens only on the lab gateway address."""
    folder = paths.registry_dir
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": False}},  # the bench counts requests
        "storage": {
            "filesystem": {"rootdirectory": str(folder / "data")},
            "delete": {"enabled": True},
        },
        "http": {
            "addr": f"{GATEWAY}:{REGISTRY_PORT}",
            "secret": http_secret,
            "tls": {
                "certificate": str(folder / "server.crt"),
                "key": str(folder / "server.key"),
            },
        },
        "auth": {"htpasswd": {"realm": "rig-lab", "path": str(folder / "htpasswd")}},
    }


def password(paths: LabPaths) -> str:
    return (paths.registry_dir / "token").read_text().strip()


def client(paths: LabPaths) -> RegistryClient:
    return RegistryClient(REGISTRY, REGISTRY_USER, password(paths), str(paths.ca_dir / "ca.crt"))


def _answers(paths: LabPaths) -> bool:
    try:
        client(paths).ping()
        return True
    except RigError:
        return False


def ensure(paths: LabPaths, say) -> bool:
    """Credentials, certificate, config, process. True if the registry was started now."""
    folder = paths.registry_dir
    folder.mkdir(parents=True, exist_ok=True)
    token = folder / "token"
    if not token.exists():
        write_private(token, secrets.token_hex(24).encode() + b"\n")
        hashed = bcrypt.hashpw(password(paths).encode(), bcrypt.gensalt(rounds=10))
        write_private(folder / "htpasswd", f"{REGISTRY_USER}:".encode() + hashed + b"\n")
    make_server_cert(paths.ca_dir, folder, GATEWAY)
    config = folder / "config.yml"
    if not config.exists():
        write_private(config, yaml.safe_dump(registry_config(paths, secrets.token_hex(16))).encode())
    if pid_alive(folder / "registry.pid") and _answers(paths):
        return False
    stop_daemon(folder / "registry.pid")
    say("registry", f"starting docker-registry on {REGISTRY}")
    start_daemon(["docker-registry", "serve", str(config)], folder / "registry.log",
                 folder / "registry.pid")
    wait_for(lambda: _answers(paths), f"registry {REGISTRY}", 30, folder / "registry.log")
    return True


def answers(paths: LabPaths) -> bool:
    return (paths.registry_dir / "token").exists() and _answers(paths)


def stop(paths: LabPaths) -> bool:
    return stop_daemon(paths.registry_dir / "registry.pid")
