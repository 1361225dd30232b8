"""`rig lab up | down | status`: a fleet like MainPC, PC2 and GHCR on this machine, real parts."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paramiko
from docker.errors import NotFound
from docker.types import IPAMConfig, IPAMPool

from ..errors import RigError
from ..proc import run
from . import hosts as lab_hosts
from . import registry as lab_registry
from .engine import Engine, answers, find_or_start, owned_engine, stop_owned
from .images import ensure_base_pushed, ensure_imported
from .layout import (
    BRIDGE,
    GATEWAY,
    HOST_IMAGE,
    LABEL,
    NETWORK,
    OPERATOR,
    REGISTRY,
    REGISTRY_USER,
    SUBNET,
    LabPaths,
    container_name,
    host_address,
    host_names,
)
from .pki import make_ca, make_ssh_key, write_private
from .state import LabState
from .system import ensure_packages

CONTROL_PACKAGES = ["docker.io", "docker-registry", "debootstrap"]
LAB_SECRETS = ["HF_TOKEN"]  # files under .lab/secrets/ that lab.yml's services read


@dataclass
class Lab:
    paths: LabPaths

    @classmethod
    def for_repo(cls, repo: Path) -> Lab:
        return cls(LabPaths.for_repo(repo))

    # -- up -----------------------------------------------------------------------------------
    def up(self, count: int, say, gpus: dict | None = None) -> LabState:
        """Bring the lab to `count` hosts; idempotent: parts that exist are reported, not redone.
        gpus: host -> its profile's GPU (GpuSpec), played by an nvidia-smi stand-in."""
        names = host_names(count)
        ensure_packages(CONTROL_PACKAGES, say)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        state = LabState.load(self.paths) or LabState()

        engine, started = find_or_start(self.paths, say)
        state.docker_host, state.engine_owned = engine.docker_host, engine.owned
        state.save(self.paths)
        say("engine", ("started " if started else "up ") + engine.docker_host
            + (" (private, owned by the lab)" if engine.owned else " (existing engine)"))

        say("network", ("created " if self._ensure_network(engine) else "up ") + f"{NETWORK} {SUBNET}")

        created = make_ca(self.paths.ca_dir)
        say("ca", ("created " if created else "up ") + str(self.paths.ca_dir / "ca.crt"))
        started = lab_registry.ensure(self.paths, say)
        say("registry", ("started " if started else "up ") + f"https://{REGISTRY} (user {REGISTRY_USER})")
        state.certs_d = self._trust_and_login(engine)
        state.save(self.paths)

        pushed = ensure_base_pushed(engine, self.paths, lab_registry.client(self.paths), say)
        say("base image", ("pushed " if pushed else "up ") + f"{REGISTRY}/rig/lab-base:trixie")

        imported = ensure_imported(engine, "host", HOST_IMAGE, say)
        say("host image", ("imported " if imported else "up ") + HOST_IMAGE)

        self._ensure_secrets()
        say("signing key", ("created " if self._ensure_signing_key() else "up ")
            + str(self.paths.signing_dir / "cosign.pub"))
        make_ssh_key(self.paths.ssh_dir)
        public_key = (self.paths.ssh_dir / "id_ed25519.pub").read_bytes()
        self._remove_hosts_beyond(engine, names, state, say)
        known: list[str] = []
        for index, host in enumerate(names):
            address = host_address(index)
            action, lines = lab_hosts.ensure_host(engine, host, address, public_key)
            known += lines
            state.hosts[host] = address
            state.save(self.paths)
            say(f"host {host}", f"{action} {address} (ssh {OPERATOR}@{address}, sudo)")
            gpu = (gpus or {}).get(host)
            if gpu is not None:
                stand_in = lab_hosts.ensure_gpu_standin(engine, host, gpu)
                say(f"gpu {host}", f"nvidia-smi stand-in: {stand_in['name']}, "
                    f"{stand_in['memory_mib']} MiB, driver {stand_in['driver']}"
                    + (" (missing)" if stand_in["missing"] else ""))
        (self.paths.ssh_dir / "known_hosts").write_text("\n".join(known) + "\n")
        return state

    def gpu(self, host: str, profile_gpu, **changes) -> dict:
        """Change a host's GPU stand-in (driver, used_mib, missing; reset=True: as the profile
        and the lab's default driver say); returns the state it now answers from."""
        state = LabState.load(self.paths)
        if state is None or not state.docker_host or host not in state.hosts:
            raise RigError(f"{host}: not a host of a running lab (rig lab up)")
        engine = Engine(state.docker_host, owned=state.engine_owned)
        return lab_hosts.set_gpu_standin(engine, host, profile_gpu, **changes)

    def _ensure_secrets(self) -> None:
        """Random 0600 values for the secrets lab.yml reads from files (a model-hub token)."""
        self.paths.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in LAB_SECRETS:
            path = self.paths.secrets_dir / name
            if not path.exists():
                write_private(path, ("lab-" + secrets.token_hex(16) + "\n").encode())

    def _ensure_signing_key(self) -> bool:
        """The lab's signing pair in cosign's encrypted format, its random password in a 0600
        file beside it (lab.yml: build.signing.password_file); made once, kept across
        `rig lab down` (what was signed with it is gone with the registry anyway)."""
        from ..supply.keys import generate_encrypted

        folder = self.paths.signing_dir
        if (folder / "cosign.key").exists() and (folder / "cosign.pub").exists():
            return False
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        password = secrets.token_hex(16)
        private, public = generate_encrypted(password.encode())
        write_private(folder / "password", password.encode() + b"\n")
        write_private(folder / "cosign.key", private)
        (folder / "cosign.pub").write_bytes(public)
        return True

    def _ensure_network(self, engine: Engine) -> bool:
        client = engine.client()
        try:
            client.networks.get(NETWORK)
            return False
        except NotFound:
            pass
        # A bridge left by an engine that was killed would block the fixed subnet.
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            run(["ip", "link", "delete", BRIDGE], check=False)
        client.networks.create(
            NETWORK,
            driver="bridge",
            ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=SUBNET, gateway=GATEWAY)]),
            options={"com.docker.network.bridge.name": BRIDGE},
            labels={LABEL: "1"},
        )
        return True

    def _trust_and_login(self, engine: Engine) -> str:
        """This machine's engine trusts the lab CA (to push the base image) and logs in with a
        DOCKER_CONFIG of the lab's own, so ~/.docker is never touched."""
        certs_d = Path("/etc/docker/certs.d") / REGISTRY
        certs_d.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.paths.ca_dir / "ca.crt", certs_d / "ca.crt")
        self.paths.docker_config.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {**engine.env(), "DOCKER_CONFIG": str(self.paths.docker_config)}
        run(["docker", "login", "-u", REGISTRY_USER, "--password-stdin", REGISTRY],
            input=lab_registry.password(self.paths), env=env, timeout=60)
        return str(certs_d)

    def _remove_hosts_beyond(self, engine: Engine, names: list[str], state: LabState, say) -> None:
        """`rig lab up --hosts 2` after `--hosts 8` removes node3..node8."""
        for host in [h for h in state.hosts if h not in names]:
            try:
                engine.client().containers.get(container_name(host)).remove(force=True, v=True)
            except NotFound:
                pass
            del state.hosts[host]
            say(f"host {host}", "removed (beyond --hosts)")
        state.save(self.paths)

    # -- down ---------------------------------------------------------------------------------
    def down(self, say) -> None:
        """Remove every container, network, volume, process and file the lab created."""
        state = LabState.load(self.paths)
        engine = owned_engine(self.paths)
        if engine is None and state and state.docker_host and answers(state.docker_host):
            engine = Engine(state.docker_host, owned=state.engine_owned)
        if engine:
            removed = lab_hosts.remove_all(engine)
            say("hosts", f"removed {', '.join(removed)}" if removed else "none")
            client = engine.client()
            for network in client.networks.list(filters={"label": LABEL}):
                network.remove()
                say("network", f"removed {network.name}")
            if not engine.owned:
                for image in (HOST_IMAGE, f"{REGISTRY}/rig/lab-base:trixie"):
                    try:
                        client.images.remove(image, force=True)
                    except NotFound:
                        pass
        if lab_registry.stop(self.paths):
            say("registry", "stopped")
        if stop_owned(self.paths):
            say("engine", "stopped the private dockerd")
        if state and state.certs_d and Path(state.certs_d).is_dir():
            shutil.rmtree(state.certs_d)
            _remove_empty_parents(Path(state.certs_d).parent, stop=Path("/etc"))
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
        _unmount_below(self.paths.root)
        shutil.rmtree(self.paths.run_dir, ignore_errors=True)
        _remove_empty_parents(self.paths.run_dir.parent, stop=Path("/run"))
        if self.paths.root.exists():
            shutil.rmtree(self.paths.root)
            say("state", f"removed {self.paths.root}")

    # -- status -------------------------------------------------------------------------------
    def status(self) -> list[tuple[str, bool, str]]:
        """(part, answers, detail) for every part of the lab."""
        state = LabState.load(self.paths)
        if state is None:
            return [("lab", False, "not up (rig lab up)")]
        rows: list[tuple[str, bool, str]] = []
        engine_ok = answers(state.docker_host)
        rows.append(("engine", engine_ok, state.docker_host))
        network_ok = False
        if engine_ok:
            client = Engine(state.docker_host, state.engine_owned).client()
            try:
                net = client.networks.get(NETWORK)
                network_ok = True
                subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
            except NotFound:
                subnet = "missing"
            rows.append(("network", network_ok, f"{NETWORK} {subnet}"))
        registry_ok = lab_registry.answers(self.paths)
        rows.append(("registry", registry_ok, f"https://{REGISTRY}"))
        for host, address in state.hosts.items():
            ok, detail = self._ssh_check(address)
            rows.append((f"host {host}", ok, f"{OPERATOR}@{address} {detail}"))
        return rows

    def _ssh_check(self, address: str) -> tuple[bool, str]:
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.paths.ssh_dir / "known_hosts"))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(address, username=OPERATOR, key_filename=str(self.paths.ssh_dir / "id_ed25519"),
                           timeout=5, allow_agent=False, look_for_keys=False)
            _, stdout, _ = client.exec_command("systemctl is-system-running", timeout=5)
            return True, f"ssh ok, systemd {stdout.read().decode().strip()}"
        except (OSError, paramiko.SSHException) as e:
            return False, f"ssh: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        finally:
            client.close()


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    """rmdir folder and its parents while empty, up to (not including) stop."""
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _unmount_below(root: Path) -> None:
    """A killed dockerd can leave overlay mounts in its data root; rmtree would fail on them."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    targets = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for target in sorted((t for t in targets if t.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)

