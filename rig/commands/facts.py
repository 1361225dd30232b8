"""The commands behind tasks' facts: each reads several things in ONE round trip (pure)."""

from __future__ import annotations

import shlex

from ..gpu.smi import GPU_QUERY
from .proxy import SOCKET as ADMIN_SOCKET

WATCHED_PACKAGES = (
    "docker.io", "docker-cli", "docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx",
    "docker-buildx-plugin", "nvidia-container-toolkit", "haproxy", "socat",
)


def host_facts_command(paths: list[str], registry: str, users: list[str],
                       network: str | None = None) -> str:
    packages = " ".join(WATCHED_PACKAGES)
    hashes = " ".join(shlex.quote(p) for p in paths)
    registry_key = shlex.quote(f'"{registry}"')
    user_checks = " ".join(shlex.quote(u) for u in users)
    return "; ".join([
        ". /etc/os-release 2>/dev/null",
        'echo "os_id=$ID"; echo "os_like=$ID_LIKE"; echo "os_version=$VERSION_ID"',
        'echo "os_codename=$VERSION_CODENAME"',
        "if command -v apt-get >/dev/null; then echo apt=1; else echo apt=0; fi",
        f"dpkg-query -W -f='pkg=${{Package}} ${{Version}} ${{db:Status-Status}}\\n' {packages} 2>/dev/null",
        'echo "docker_active=$(systemctl is-active docker 2>/dev/null)"',
        'echo "docker_enabled=$(systemctl is-enabled docker 2>/dev/null)"',
        'echo "buildx=$(docker buildx version 2>/dev/null)"',
        'echo "haproxy_active=$(systemctl is-active haproxy 2>/dev/null)"',
        'echo "haproxy_enabled=$(systemctl is-enabled haproxy 2>/dev/null)"',
        # rig's admin socket is there (a running HAProxy whose socket file was removed keeps
        # running without one, and a reload does not bind it again: only a restart does)
        f'if [ -S {ADMIN_SOCKET} ]; then echo haproxy_socket=1; else echo haproxy_socket=0; fi',
        f"docker network inspect -f 'net={{{{.Name}}}} {{{{.Driver}}}}' {shlex.quote(network)} "
        "2>/dev/null" if network else "true",
        f'for f in {hashes}; do echo "sha=$f $(sha256sum < "$f" 2>/dev/null | cut -d" " -f1)"; done'
        if paths else "true",
        'echo "docker_group=$(getent group docker | cut -d: -f4)"',
        # The hash of the stored auth for this registry, never the auth itself.
        f"a=$(grep -A1 {registry_key} \"$HOME/.docker/config.json\" 2>/dev/null "
        "| sed -n 's/.*\"auth\": *\"\\([^\"]*\\)\".*/\\1/p' | head -n1); "
        'if [ -n "$a" ]; then echo "login=$(printf %s "$a" | sha256sum | cut -d" " -f1)"; '
        'else echo login=; fi',
        f"for u in {user_checks}; do id -u \"$u\" >/dev/null 2>&1 && echo \"user=$u\"; done"
        if users else "true",
        "true",
    ])


def nvidia_gpus_command() -> str:
    """The GPUs as nvidia-smi lists them (rig/gpu/smi.py); nothing when it fails."""
    return f"{GPU_QUERY} 2>/dev/null || true"
