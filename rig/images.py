"""The images the spec asks for: each family, each service, and one per machine for per-machine
services. Names follow the seeds: <registry>/<namespace>/family-<family>:<tag> and
<registry>/<namespace>/<service>:<tag>, with "-<machine>" on the tag of per-machine images.

Each image also has a source hash: the sha256 of everything that decides its content (the
context's files, build arguments, base image, platform and, for services, the family's hash).
Two builds with the same source hash make the same image, so rig reuses one already in the
registry (it copies the manifest to the new tag) instead of building it again."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import Fleet

SKIP_NAMES = {"__pycache__", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".swp")


@dataclass(frozen=True)
class Image:
    target: str                 # bake target: llm-cu121, model_ops_coordinator-mainpc
    kind: str                   # "family" or "service"
    name: str                   # family or service name
    repository: str             # host/namespace/image, without tag
    tag: str                    # T, or T-<machine>
    context: str                # relative to the spec's folder
    args: dict[str, str] = field(default_factory=dict)
    family: str | None = None   # services: the family target they build FROM
    machine: str | None = None  # per-machine services

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def path(self) -> str:
        """Repository path inside the registry (what the v2 API calls the name)."""
        return self.repository.split("/", 1)[1]

    def tagged(self, tag: str) -> str:
        return f"{self.repository}:{tag}"


def family_image(fleet: Fleet, name: str, tag: str) -> Image:
    spec = fleet.families[name]
    return Image(target=name, kind="family", name=name,
                 repository=fleet.registry.repository(f"family-{name}"), tag=tag,
                 context=spec.context, args={"BASE_IMAGE": spec.base_image})


def service_machines(fleet: Fleet, service: str) -> list[str]:
    """Profiles of the hosts that run a per-machine service, in host order, once each."""
    machines: list[str] = []
    for host in fleet.service_hosts(service):
        profile = fleet.hosts[host].profile
        if profile not in machines:
            machines.append(profile)
    return machines


def service_images(fleet: Fleet, name: str, tag: str, extra_args: dict | None = None) -> list[Image]:
    spec = fleet.services[name]
    repository = fleet.registry.repository(name)
    args = dict(extra_args or {})
    if not spec.per_machine:
        return [Image(target=name, kind="service", name=name, repository=repository, tag=tag,
                      context=spec.context, args=args, family=spec.family)]
    return [
        Image(target=f"{name}-{machine}", kind="service", name=name, repository=repository,
              tag=f"{tag}-{machine}", context=spec.context,
              args={**fleet.profiles[machine].build_env(), **args}, family=spec.family,
              machine=machine)
        for machine in service_machines(fleet, name)
    ]


def expected_images(fleet: Fleet, tag: str, extra_args: dict[str, dict] | None = None) -> list[Image]:
    """Families first, then services (per machine where asked), in spec order."""
    extra_args = extra_args or {}
    images = [family_image(fleet, name, tag) for name in fleet.families]
    for name in fleet.services:
        images.extend(service_images(fleet, name, tag, extra_args.get(name)))
    return images


def build_tag(fleet: Fleet, service: str, host: str, image_tag: str) -> str:
    """The tag a build used, from the tag an image carries: a per-machine service's images are
    tagged <tag>-<machine> (what state.json and the ledger record)."""
    machine = fleet.hosts[host].profile
    if fleet.services[service].per_machine and image_tag.endswith(f"-{machine}"):
        return image_tag[: -len(machine) - 1]
    return image_tag


def image_for(fleet: Fleet, service: str, host: str, tag: str) -> Image:
    """The image a host runs for a service: its machine's variant for per-machine services."""
    machine = fleet.hosts[host].profile
    for image in service_images(fleet, service, tag):
        if image.machine in (None, machine):
            return image
    raise KeyError(f"{service}: no image for machine {machine}")


# -- source hashes ----------------------------------------------------------------------------
def context_files(folder: Path) -> list[Path]:
    """Files that can reach the build: everything in the context but editor and Python caches.
    (A stricter reading of .dockerignore could only shrink this; a bigger set is the safe side:
    at worst an image is rebuilt that did not need to be.)"""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not SKIP_NAMES.intersection(path.parts) \
                and not path.name.endswith(SKIP_SUFFIXES):
            files.append(path)
    return files


def tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in context_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
        digest.update(b"x" if path.stat().st_mode & 0o111 else b"-")
    return digest.hexdigest()


def source_hashes(fleet: Fleet, images: list[Image]) -> dict[str, str]:
    """target -> sha256 of what decides the image's content."""
    hashes: dict[str, str] = {}
    trees: dict[str, str] = {}
    for image in images:  # families come first, so a service finds its family's hash
        if image.context not in trees:
            trees[image.context] = tree_hash(fleet.path(image.context))
        material = {
            "tree": trees[image.context],
            "args": image.args,
            "platform": fleet.build.platform,
            "family": hashes.get(image.family) if image.family else None,
        }
        canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
        hashes[image.target] = hashlib.sha256(canonical.encode()).hexdigest()
    return hashes


def source_tag(source_hash: str) -> str:
    return f"src-{source_hash[:24]}"
