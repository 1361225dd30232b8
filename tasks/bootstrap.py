"""bootstrap: a bare Debian/Ubuntu host to ready. The order matters: daemon.json before the
engine package (it starts dockerd at once), the NVIDIA runtime after the engine."""

from __future__ import annotations

from pyinfra.api import deploy

from .docker import install_docker
from .nvidia import install_nvidia
from .profile import push_profile
from .proxy import install_proxy


@deploy("Bootstrap")
def bootstrap(token: str | None = None):
    install_docker(token=token)
    install_nvidia()
    install_proxy()
    push_profile()
