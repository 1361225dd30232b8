"""What `rig prune` removes on a host, decided from what the host listed (pure).

Never removed: an image any container uses (running, stopped, or kept as -prev), and the image
of each service's current and previous digest in state.json (what a rollback returns to).
Of the rest, per service repository, the `keep` newest stay. Containers labelled as a rig
service the spec no longer has are orphans: removed, and their images with them when no
other container uses those."""

from __future__ import annotations

from dataclasses import dataclass, field

from .commands.day2 import parse_size


@dataclass(frozen=True)
class HostImage:
    repository: str
    tag: str
    digest: str
    id: str
    created: str
    size: int


@dataclass(frozen=True)
class HostContainer:
    name: str
    image_id: str
    service: str    # the rig.service label, "" when none


@dataclass
class PrunePlan:
    orphans: list[str] = field(default_factory=list)            # container names
    images: list[HostImage] = field(default_factory=list)       # one per image id
    kept: dict[str, int] = field(default_factory=dict)          # repository -> images kept

    @property
    def freed(self) -> int:
        return sum(image.size for image in self.images)


def parse_inventory(stdout: str) -> tuple[list[HostImage], list[HostContainer]]:
    images, containers, section = [], [], None
    for line in stdout.splitlines():
        if line.startswith("--- "):
            section = line[4:].strip()
            continue
        parts = line.split("\t")
        if section == "images" and len(parts) == 6:
            repo, tag, digest, image_id, created, size = parts
            images.append(HostImage(repo, tag, digest, image_id, created, parse_size(size)))
        elif section == "containers" and len(parts) == 3:
            name, image_id, service = parts
            containers.append(HostContainer(name.lstrip("/"), image_id,
                                            "" if service == "<no value>" else service))
    return images, containers


def plan_prune(images: list[HostImage], containers: list[HostContainer], state: dict,
               repositories: dict[str, str], keep: int) -> PrunePlan:
    """repositories: repository -> service, for every image rig deploys (the spec's)."""
    plan = PrunePlan()
    services = set(repositories.values())
    plan.orphans = sorted(c.name for c in containers if c.service and c.service not in services)
    orphan_names = set(plan.orphans)
    used = {c.image_id for c in containers if c.name not in orphan_names}
    wanted = {d for entry in state.values() if isinstance(entry, dict)
              for d in (entry.get("digest"), (entry.get("previous") or {}).get("digest")) if d}
    by_repo: dict[str, dict[str, list[HostImage]]] = {}
    for image in images:
        if image.repository in repositories:
            by_repo.setdefault(image.repository, {}).setdefault(image.id, []).append(image)
    for repository, by_id in sorted(by_repo.items()):
        protected = {i for i, rows in by_id.items()
                     if i in used or any(r.digest in wanted for r in rows)}
        newest = sorted(by_id, key=lambda i: by_id[i][0].created, reverse=True)
        kept = set(newest[:keep]) | protected
        plan.kept[repository] = len(kept)
        plan.images += [by_id[i][0] for i in newest if i not in kept]
    first = {image.id: image for image in images}
    orphaned = {c.image_id for c in containers if c.name in orphan_names} - used
    plan.images += [first[i] for i in sorted(orphaned) if i in first
                    and first[i].repository not in repositories]
    return plan
