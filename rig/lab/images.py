"""Lab images from Debian's own archive (there is no Docker Hub here): debootstrap a root
filesystem once, cache it as a tarball, `docker import` it into the engine."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from docker.errors import ImageNotFound

from ..errors import RigError
from ..proc import run
from .engine import Engine
from .layout import (
    BASE_ENV,
    BASE_IMAGE,
    BASE_PACKAGES,
    HOST_PACKAGES,
    MIRROR,
    SUITE,
    LabPaths,
    package_key,
)

# sshd makes host keys at start, so each lab host gets its own instead of sharing the image's.
SSH_HOSTKEYS_DROPIN = """[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
"""


def _customise_host(root: Path) -> None:
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    dropin = root / "etc/systemd/system/ssh.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "hostkeys.conf").write_text(SSH_HOSTKEYS_DROPIN)
    # A real workstation has an operator account; bootstrap adds it to the docker group.
    run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", "ops"])
    (root / "etc/sudoers.d/ops").write_text("ops ALL=(ALL) NOPASSWD:ALL\n")
    (root / "etc/sudoers.d/ops").chmod(0o440)
    (root / "etc/hostname").unlink(missing_ok=True)


def _clean(root: Path) -> None:
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists"):
        target = root / folder
        for item in target.glob("*"):
            if item.is_file():
                item.unlink()


def tarball(kind: str, say) -> Path:
    """Cached root filesystem tarball for `host` or `base`; built with debootstrap if missing."""
    packages = HOST_PACKAGES if kind == "host" else BASE_PACKAGES
    cache = LabPaths.cache_dir()
    target = cache / f"{kind}-{SUITE}-{package_key(SUITE, packages)}.tar"
    if target.exists():
        return target
    if not shutil.which("debootstrap"):
        raise RigError("debootstrap is not installed (apt-get install debootstrap)")
    cache.mkdir(parents=True, exist_ok=True)
    say("image", f"debootstrap {SUITE} for the {kind} image (about a minute, cached afterwards)")
    with tempfile.TemporaryDirectory(dir=cache, prefix=f"{kind}-") as tmp:
        root = Path(tmp) / "root"
        run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE,
             str(root), MIRROR], timeout=900)
        if kind == "host":
            _customise_host(root)
        _clean(root)
        partial = target.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            tar.add(root, arcname=".")
        partial.rename(target)
    return target


def ensure_imported(engine: Engine, kind: str, name: str, say, env: dict | None = None) -> bool:
    """Import the tarball as image `name` (with `env` as its ENV) unless the engine has it.
    True if imported now."""
    client = engine.client()
    try:
        client.images.get(name)
        return False
    except ImageNotFound:
        pass
    source = tarball(kind, say)
    say("image", f"importing {name}")
    changes = [a for key, value in sorted((env or {}).items())
               for a in ("--change", f"ENV {key}={json.dumps(value)}")]
    run(["docker", "import", *changes, str(source), name], env=engine.env(), timeout=600)
    return True


def ensure_base_pushed(engine: Engine, paths: LabPaths, registry_client, say) -> bool:
    """The base image Dockerfiles build FROM, in the lab registry. True if pushed now."""
    repository, tag = BASE_IMAGE.split("/", 1)[1].rsplit(":", 1)
    if registry_client.manifest_digest(repository, tag):
        return False
    ensure_imported(engine, "base", BASE_IMAGE, say, env=BASE_ENV)
    say("image", f"pushing {BASE_IMAGE}")
    env = {**engine.env(), "DOCKER_CONFIG": str(paths.docker_config)}
    run(["docker", "push", BASE_IMAGE], env=env, timeout=600)
    return True
