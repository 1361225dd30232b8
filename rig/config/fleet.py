"""The whole spec: fleet.yml plus the machine profiles it names."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PrivateAttr

from ..errors import RigError
from .base import Name, StrictModel
from .bootstrap import BootstrapSpec
from .build import BuildSpec
from .hosts import HostSpec
from .images import FamilySpec, ServiceSpec
from .profiles import ProfileSpec
from .proxy import ProxySpec
from .registry import RegistrySpec
from .rollout import PERCENT, RolloutSpec
from .runtime import Runtime, RuntimeSpec, resolve


def is_inside(path: Path, folder: Path) -> bool:
    """True when path, with symlinks and `..` resolved, is folder or below it."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


class Fleet(StrictModel):
    registry: RegistrySpec = Field(description="Where images are pushed and pulled")
    build: BuildSpec = Field(default_factory=BuildSpec, description="How images are built")
    families: dict[Name, FamilySpec] = Field(min_length=1, description="Family base images")
    services: dict[Name, ServiceSpec] = Field(min_length=1, description="Service images")
    hosts: dict[Name, HostSpec] = Field(min_length=1, description="Machines and their profiles")
    rollout: RolloutSpec = Field(description="Canary, batches, rollback")
    defaults: RuntimeSpec = Field(default_factory=RuntimeSpec,
                                  description="Runtime settings every service starts from")
    bootstrap: BootstrapSpec = Field(default_factory=BootstrapSpec, description="Host setup")
    proxy: ProxySpec = Field(default_factory=ProxySpec,
                             description="The per-host proxy in front of every service")
    profiles: dict[Name, ProfileSpec] = Field(
        default_factory=dict, description="Loaded from profiles/<name>.yml, not written here"
    )

    _base_dir: Path = PrivateAttr(default=Path("."))

    # -- paths --------------------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def path(self, relative: str) -> Path:
        """A path from the spec, resolved against the folder fleet.yml lives in.

        The models let only build.ca_bundle be absolute; a relative path that leads out of the
        folder (`..`, or a symlink placed after loading) is refused here as well."""
        p = Path(relative)
        if p.is_absolute():
            return p
        full = self._base_dir / p
        if not is_inside(full, self._base_dir):
            raise RigError(f"{relative}: leads out of the spec's folder {self._base_dir}")
        return full

    @property
    def requires_signed(self) -> bool:
        """Whether a rollout refuses images without a valid signature (rollout.require_signed;
        by default, whenever build.signing lists public keys)."""
        if self.rollout.require_signed is not None:
            return self.rollout.require_signed
        return bool(self.build.signing.public_keys)

    @property
    def requires_provenance(self) -> bool:
        """Whether a rollout also refuses images without fitting provenance (only where
        signatures are checked: the provenance is trusted for its signature)."""
        return self.requires_signed and self.rollout.require_provenance is not False

    # -- hosts and groups ---------------------------------------------------------------------
    def groups(self) -> dict[str, list[str]]:
        """Group name -> hosts, including the implicit `canary` group from the rollout policy."""
        groups: dict[str, list[str]] = {}
        for host, spec in self.hosts.items():
            for group in spec.groups:
                groups.setdefault(group, []).append(host)
        groups["canary"] = [h for h in self.rollout.canary if h in self.hosts]
        return groups

    def resolve_hosts(self, names: list[str]) -> list[str]:
        """Host or group names -> host names, in fleet order, without duplicates."""
        groups = self.groups()
        wanted: set[str] = set()
        for name in names:
            wanted.update(groups.get(name, [name]))
        return [h for h in self.hosts if h in wanted]

    def service_hosts(self, service: str) -> list[str]:
        return self.resolve_hosts(self.services[service].hosts)

    def services_on(self, host: str) -> list[str]:
        return [s for s in self.services if host in self.service_hosts(s)]

    def profile_of(self, host: str) -> ProfileSpec:
        return self.profiles[self.hosts[host].profile]

    def gpu_present(self, host: str) -> bool:
        """True when rig reads and checks a GPU on this host (the profile has one and
        bootstrap.nvidia is enabled)."""
        return self.bootstrap.nvidia.enabled and self.profile_of(host).gpu is not None

    def gpu_enabled(self, host: str) -> bool:
        """True when containers on this host get GPUs: rig manages its GPU and installs the
        NVIDIA container toolkit there (bootstrap.nvidia.toolkit)."""
        return self.gpu_present(host) and self.bootstrap.nvidia.toolkit

    def _declared_runtime(self, service: str, host: str) -> Runtime:
        spec = self.services[service]
        layers = [self.defaults, spec.runtime]
        profile = self.hosts[host].profile
        if profile in spec.by_profile:
            layers.append(spec.by_profile[profile])
        return resolve(layers, spec.gpu, self.rollout.stop_timeout)

    def wants_gpu(self, service: str, host: str) -> bool:
        """The service asks for a GPU on this host (whether or not its containers get one)."""
        return self._declared_runtime(service, host).gpus != "none"

    def runtime(self, service: str, host: str) -> Runtime:
        """How `service` runs on `host`: defaults, the service's runtime, its by_profile entry
        for the host's profile; gpus none where rig manages no GPU."""
        resolved = self._declared_runtime(service, host)
        if not self.gpu_enabled(host) and resolved.gpus != "none":
            resolved = resolved.model_copy(update={"gpus": "none"})
        return resolved

    def batch_size(self, remaining: int, batch: int | str | None = None) -> int:
        """Hosts per wave after the canary: a count, or a share of the remaining hosts (at
        least one). `batch` overrides the spec's rollout.batch (rig rollout --batch)."""
        batch = self.rollout.batch if batch is None else batch
        if isinstance(batch, int):
            return batch
        percent = int(PERCENT.match(batch).group(1))  # shape checked by RolloutSpec / parse_batch
        return max(1, (remaining * percent) // 100)
