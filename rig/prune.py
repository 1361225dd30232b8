"""What `rig prune` removes on a host, decided from what the host listed (pure).

Never removed: an image any container uses (running, stopped, or kept as -prev), and the image
of each service's current and previous digest in state.json (what a rollback returns to).
Of the rest, per service repository, the `keep` newest stay. Containers labelled as a rig
service the spec no longer has are orphans: removed, and their images with them when no
other container uses those.

What goes is a list of references, one per row `docker image ls --digests` printed
(`repository:tag`, or `repository@digest` for an untagged row), only of rig's repositories:
an image that also carries a tag of a repository rig does not manage keeps that tag (removing
rig's tag only untags it), and frees nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from .commands.day2 import parse_size

NONE = "<none>"


@dataclass(frozen=True)
class HostImage:
    repository: str
    tag: str
    digest: str
    id: str
    created: str
    size: int

    @property
    def ref(self) -> str:
        """What `docker rmi` removes this row by: repository:tag, else repository@digest, else
        "" (a row with neither has no name to remove it by)."""
        if self.repository == NONE:
            return ""
        if self.tag != NONE:
            return f"{self.repository}:{self.tag}"
        return f"{self.repository}@{self.digest}" if self.digest.startswith("sha256:") else ""


@dataclass(frozen=True)
class HostContainer:
    name: str
    image_id: str
    service: str    # the rig.service label, "" when none


@dataclass
class PrunePlan:
    orphans: list[str] = field(default_factory=list)            # container names
    images: list[HostImage] = field(default_factory=list)       # one per reference removed
    kept: dict[str, int] = field(default_factory=dict)          # repository -> images kept
    freed: int = 0      # bytes of the images that lose every reference (each image once)

    @property
    def refs(self) -> list[str]:
        return [image.ref for image in self.images]


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
               repositories: dict[str, str], keep: int, namespace: str = "") -> PrunePlan:
    """repositories: repository -> service, for every image rig deploys (the spec's);
    namespace: the prefix of rig's repositories (`<registry>/<namespace>/`), where an orphan
    service's images are (`<prefix><service>`)."""
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
    going: list[HostImage] = []
    for repository, by_id in sorted(by_repo.items()):
        protected = {i for i, rows in by_id.items()
                     if i in used or any(r.digest in wanted for r in rows)}
        newest = sorted(by_id, key=lambda i: by_id[i][0].created, reverse=True)
        kept = set(newest[:keep]) | protected
        plan.kept[repository] = len(kept)
        going += [row for i in newest if i not in kept for row in by_id[i]]
    if namespace:
        orphaned = {(c.image_id, f"{namespace}{c.service}") for c in containers
                    if c.name in orphan_names and c.image_id not in used}
        going += [row for row in images if (row.id, row.repository) in orphaned]
    seen: set[str] = set()
    for row in going:
        if row.ref and row.ref not in seen:
            seen.add(row.ref)
            plan.images.append(row)
    rows_of: dict[str, list[HostImage]] = {}
    for image in images:
        rows_of.setdefault(image.id, []).append(image)
    freed = {row.id for row in plan.images
             if all(other.ref in seen for other in rows_of[row.id])}
    plan.freed = sum(rows_of[i][0].size for i in sorted(freed))
    return plan
