"""The `docker buildx bake` file for a set of images, and the commands around it (pure).

Families are targets of their own; a service target builds FROM `family`, which bake resolves to
the family target through `contexts = {family = "target:<family>"}`, so one bake builds the
family once and every service on top of it, in dependency order."""

from __future__ import annotations

import shlex

from ..config import Fleet
from ..images import Image, source_tag
from .base import Cmd, all_of, pipe, sh
from .jobs import job_dir_create, job_dir_remove

BAKE_FILE = "docker-bake.json"
OCI = "org.opencontainers.image"


def cache_tag(fleet: Fleet, image: Image) -> str:
    """The moving tag an inline cache lives under: buildcache, or buildcache-<machine>."""
    return fleet.build.cache_image + (f"-{image.machine}" if image.machine else "")


def labels(fleet: Fleet, image: Image, source_hash: str, revision: str, created: str) -> dict[str, str]:
    """OCI labels plus rig's own: which family, which machine, which sources."""
    result = {
        f"{OCI}.title": image.repository.rsplit("/", 1)[1],
        f"{OCI}.version": image.tag,
        f"{OCI}.revision": revision,
        f"{OCI}.created": created,
    }
    if fleet.build.source_url:
        result[f"{OCI}.source"] = fleet.build.source_url
    result["io.rig.kind"] = image.kind
    result["io.rig.family"] = image.family or image.name
    result["io.rig.machine"] = image.machine or "any"
    result["io.rig.source-hash"] = source_hash
    return result


def cache_entries(fleet: Fleet, image: Image, mode: str) -> dict[str, list[str]]:
    if mode == "registry":
        ref = fleet.registry.repository(fleet.build.cache_image) + f":{image.target}"
        return {"cache-from": [f"type=registry,ref={ref}"],
                "cache-to": [f"type=registry,ref={ref},mode=max"]}
    if mode == "inline":
        return {"cache-from": [f"type=registry,ref={image.tagged(cache_tag(fleet, image))}"],
                "cache-to": ["type=inline"]}
    return {}


def push_refs(fleet: Fleet, image: Image, source_hash: str, cache: str) -> list[str]:
    """Every tag one built image is pushed under: the release tag, its source tag, and the
    inline cache tag when that cache is in use."""
    refs = [image.ref, image.tagged(source_tag(source_hash))]
    if cache == "inline":
        refs.append(image.tagged(cache_tag(fleet, image)))
    return refs


def bake_file(fleet: Fleet, images: list[Image], hashes: dict[str, str], *, build: list[str],
              revision: str, created: str, cache: str, secret_src: str | None) -> dict:
    """The bake definition. `images` must include the family of every service in it; `build`
    names the targets to build (the default group); families only needed by them are built as
    dependencies without being exported."""
    targets: dict[str, dict] = {}
    for image in images:
        target: dict = {
            "context": image.context,
            "dockerfile": "Dockerfile",
            "platforms": [fleet.build.platform],
            "tags": [image.ref, image.tagged(source_tag(hashes[image.target]))]
            + ([image.tagged(cache_tag(fleet, image))] if cache == "inline" else []),
            "labels": labels(fleet, image, hashes[image.target], revision, created),
            "output": ["type=docker"],
        }
        if image.args:
            target["args"] = dict(sorted(image.args.items()))
        if image.family:
            target["contexts"] = {"family": f"target:{image.family}"}
        target.update(cache_entries(fleet, image, cache))
        if secret_src:
            target["secret"] = [f"id=pip_ca,src={secret_src}"]
        targets[image.target] = target
    return {"group": {"default": {"targets": list(build)}}, "target": targets}


def bake_command(folder: str, targets: list[str]) -> str:
    """Run bake in the folder holding the bake file and the contexts (paths are relative)."""
    names = " ".join(shlex.quote(t) for t in targets)
    return (f"cd {shlex.quote(folder)} && docker buildx bake -f {BAKE_FILE} "
            f"--progress plain {names}")


def push_command(refs: list[str]) -> str:
    """Push refs one after another, stopping at the first failure."""
    return " && ".join(f"docker push -q {shlex.quote(ref)}" for ref in refs)


def pushed_digests_command(refs: list[str]) -> str:
    """The repository digests the build host's engine knows for these images after their push:
    one JSON list (`repo@sha256:...`) per ref, in order. What was pushed, as opposed to what the
    registry says now."""
    return ("docker image inspect -f '{{json .RepoDigests}}' "
            + " ".join(shlex.quote(ref) for ref in refs))


def builder_driver_command() -> str:
    return "docker buildx inspect 2>/dev/null | sed -n 's/^Driver: *//p' | head -n 1"


BUILD_ROOT = "/var/lib/rig/build"


def build_dir_create() -> Cmd:
    """A fresh private build folder: mktemp -d under a root-owned 0700 folder (as root on the
    build host, through sudo), so no other user can plant a symlink or swap a file in it.
    Prints the folder's path."""
    return job_dir_create(BUILD_ROOT)


def unpack_context(workdir: str) -> Cmd:
    """The build context arrives as base64 of a tar.gz on stdin (no upload through /tmp)."""
    return all_of(sh("mkdir", f"{workdir}/ctx"),
                  pipe(sh("base64", "-d"), sh("tar", "-xz", "-C", f"{workdir}/ctx")))


def build_dir_remove(workdir: str) -> Cmd:
    return job_dir_remove(workdir, BUILD_ROOT)


def cache_mode(requested: str, driver: str) -> tuple[str, str]:
    """(mode, why). The docker driver cannot export a registry cache; docker-container can."""
    exports_registry = driver in ("docker-container", "kubernetes", "remote")
    if requested == "auto":
        if exports_registry:
            return "registry", f"builder driver {driver} exports a registry cache"
        return "inline", f"builder driver {driver or 'unknown'} cannot export a registry cache"
    if requested == "registry" and not exports_registry:
        return "inline", (f"cache: registry asked, but builder driver {driver or 'unknown'} "
                          "cannot export it; using inline")
    return requested, f"cache: {requested} as the spec asks"


def build_commands(bake: dict, folder: str, network: str) -> list[str]:
    """The same bake definition as `docker buildx build` commands, one per target, families
    first. Used when the build needs a network mode bake cannot set: buildx before 0.18 has no
    `network` key in bake files, and engines without a bridge (the lab) need `--network host`.
    A `target:<family>` context becomes the family image just built (docker-image://)."""
    targets = bake["target"]
    wanted = list(bake["group"]["default"]["targets"])
    for name in list(wanted):  # families the wanted services build FROM come first
        for context in targets[name].get("contexts", {}).values():
            dependency = context.removeprefix("target:")
            if context.startswith("target:") and dependency not in wanted:
                wanted.insert(0, dependency)
    ordered = sorted(wanted, key=lambda n: (bool(targets[n].get("contexts")), wanted.index(n)))
    commands = []
    for name in ordered:
        target = targets[name]
        argv = ["docker", "buildx", "build", "--progress", "plain", "--network", network,
                "-f", f"{target['context']}/{target['dockerfile']}"]
        argv += ["--platform", ",".join(target["platforms"])]
        for key, value in target.get("args", {}).items():
            argv += ["--build-arg", f"{key}={value}"]
        for key, value in target["labels"].items():
            argv += ["--label", f"{key}={value}"]
        for tag in target["tags"]:
            argv += ["-t", tag]
        for alias, context in target.get("contexts", {}).items():
            family = targets[context.removeprefix("target:")]["tags"][0]
            argv += ["--build-context", f"{alias}=docker-image://{family}"]
        for key in ("cache-from", "cache-to", "secret", "output"):
            for value in target.get(key, []):
                argv += [f"--{key}", value]
        argv.append(target["context"])
        commands.append(f"echo {shlex.quote('== ' + name)}")
        commands.append(" ".join(shlex.quote(a) for a in argv))
    return [f"cd {shlex.quote(folder)}", *commands]
