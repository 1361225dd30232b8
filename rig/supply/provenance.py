"""SLSA provenance v1 for the images rig builds: the predicate, and reading one back.

    predicate(build)         -> the SLSA v1 predicate (pure) of a Build
    summary(predicate)       -> Summary(target, commit, clean, builder, ...) or RigError (untrusted)
    commit_of_tag(tag)       -> the short sha a rig tag names (20261123-1a2b3c4d[-dirty]), or None
    problems(summary, target, tag) -> why this provenance does not fit an image (pure)

An image reused at a new tag (same source hash, so the same content: rig copies the manifest
instead of building) gets a provenance of its own for the new commit, saying so in
`internalParameters.reusedFrom`; rig writes it only when the original's provenance, by the same
key, names the same source hash (rig/ops/signing.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rig.errors import RigError

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://rig.invalid/buildtypes/bake/v1"   # rig's own: the fields below
_TAG = re.compile(r"\d{8}-([0-9a-f]{7,40})(?:-dirty)?\Z")
_SHA = re.compile(r"[0-9a-f]{40}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
MAX_REUSES = 10000     # commits one reuse statement may list (about 42 bytes each)


@dataclass(frozen=True)
class Build:
    """What rig knows about one image it built (or reused) and pushed."""
    target: str                      # bake target: the service (or family) and its machine
    tag: str                         # the tag it was pushed at (the build's, without -<machine>)
    commit: str | None               # 40-hex git revision of the spec's checkout (None: not one)
    clean: bool                      # no uncommitted changes when it was built
    source_hash: str                 # rig's source hash (images.py): what decides the content
    context: str                     # the context folder, relative to the spec
    context_digest: str              # sha256 hex of the context's files (images.tree_hash)
    dockerfile_digest: str           # sha256 hex of the context's Dockerfile
    args: dict = field(default_factory=dict)          # build args (MACHINE, BASE_IMAGE, ...)
    bases: dict = field(default_factory=dict)         # base image ref -> sha256:<hex>
    builder: str = ""                # where it was built: "this machine" or a build host
    rig_version: str = ""
    started: str = ""                # RFC 3339 UTC
    finished: str = ""
    reused_from: str | None = None   # the tag whose image was reused, if it was not built now
    source_url: str = ""             # the repository the commit is in (build.source_url)
    also: tuple[str, ...] = ()       # a reuse: the earlier commits the same image was reused at


def predicate(build: Build) -> dict:
    internal: dict = {"sourceHash": build.source_hash, "clean": build.clean}
    if build.reused_from:
        # one statement for every commit the image was reused at (it replaces the last one):
        # a re-tag per commit must not push a build's own statements out of the manifest
        internal["reusedFrom"] = build.reused_from
        internal["reusedAt"] = sorted({*build.also, *([build.commit] if build.commit else [])})
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "target": build.target,
                "tag": build.tag,
                "source": {"commit": build.commit, "clean": build.clean},
                "context": build.context,
                "buildArgs": dict(sorted(build.args.items())),
            },
            "internalParameters": internal,
            "resolvedDependencies": [
                *([{"uri": f"git+{build.source_url or 'unknown'}@{build.commit}",
                    "digest": {"gitCommit": build.commit}, "name": "source"}] if build.commit
                  else []),
                {"uri": f"file:{build.context}", "digest": {"sha256": build.context_digest},
                 "name": "context"},
                {"uri": f"file:{build.context}/Dockerfile",
                 "digest": {"sha256": build.dockerfile_digest}, "name": "Dockerfile"},
                *({"uri": f"oci:{ref}", "digest": {"sha256": digest.removeprefix("sha256:")},
                   "name": "base"} for ref, digest in sorted(build.bases.items())),
            ],
        },
        "runDetails": {
            "builder": {"id": f"urn:rig:builder:{build.builder}",
                        "version": {"rig": build.rig_version}},
            "metadata": {"invocationId": f"{build.target}@{build.tag}",
                         "startedOn": build.started, "finishedOn": build.finished},
        },
    }


@dataclass(frozen=True)
class Summary:
    target: str
    commit: str | None
    clean: bool
    builder: str
    source_hash: str
    tag: str
    reused_from: str | None
    finished: str
    commits: tuple[str, ...] = ()   # every commit it vouches for (a reuse: all it was reused at)


def _get(doc: object, *path: str, kind: type = str):
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            raise RigError(f"the provenance has no {'.'.join(path)}")
        doc = doc[key]
    if not isinstance(doc, kind):
        raise RigError(f"the provenance's {'.'.join(path)} is not a {kind.__name__}")
    return doc


def summary(doc: object) -> Summary:
    """The fields rig checks, from an untrusted predicate; RigError naming a field otherwise."""
    if _get(doc, "buildDefinition", "buildType") != BUILD_TYPE:
        raise RigError("the provenance is not of rig's build type")
    source = _get(doc, "buildDefinition", "externalParameters", "source", kind=dict)
    commit = source.get("commit")
    if commit is not None and (not isinstance(commit, str) or not _SHA.fullmatch(commit)):
        raise RigError("the provenance's commit is not a 40-hex git revision (nor null: no checkout)")
    source_hash = _get(doc, "buildDefinition", "internalParameters", "sourceHash")
    if not _HEX64.fullmatch(source_hash):
        raise RigError("the provenance's sourceHash is not 64 hex digits")
    internal = _get(doc, "buildDefinition", "internalParameters", kind=dict)
    reused = internal.get("reusedFrom")
    commits = (commit,) if commit else ()
    if isinstance(reused, str):
        more = internal.get("reusedAt", [])
        if not isinstance(more, list) or len(more) > MAX_REUSES or not all(
                isinstance(c, str) and _SHA.fullmatch(c) for c in more):
            raise RigError("the provenance's reusedAt is not a list of 40-hex git revisions")
        commits = tuple(dict.fromkeys([*commits, *more]))
    return Summary(
        target=_get(doc, "buildDefinition", "externalParameters", "target"),
        commit=commit,
        clean=_get(doc, "buildDefinition", "externalParameters", "source", "clean", kind=bool),
        builder=_get(doc, "runDetails", "builder", "id"),
        source_hash=source_hash,
        tag=_get(doc, "buildDefinition", "externalParameters", "tag"),
        reused_from=reused if isinstance(reused, str) else None,
        finished=_get(doc, "runDetails", "metadata", "finishedOn"),
        commits=commits,
    )


def commit_of_tag(tag: str) -> str | None:
    """The short sha in a rig tag (`20261123-1a2b3c4d`, `-dirty` or not); None for a tag of
    another form (set with --tag), which names no commit."""
    match = _TAG.fullmatch(tag)
    return match.group(1) if match else None


def problems(found: Summary, target: str, tag: str) -> list[str]:
    """Why a provenance does not fit the image of `target` at `tag` (pure): another build
    target, or another commit than the tag names."""
    out = []
    if found.target != target:
        out.append(f"its provenance is of build target {found.target!r}, not {target!r}")
    short = commit_of_tag(tag)
    if short and not any(c.startswith(short) for c in found.commits):
        out.append(f"its provenance names commit {(found.commit or 'none')[:12]}, not {short} as the "
                   "tag says")
    elif short and not tag.endswith("-dirty") and not found.clean:
        out.append("its provenance says the tree had uncommitted changes; the tag (no -dirty) "
                   "says a clean build of that commit")
    return out


def fits(found: Summary, target: str, tag: str) -> bool:
    return not problems(found, target, tag)


def judge(predicates: list, target: str, tag: str) -> tuple[Summary | None, list[str], list[str]]:
    """Of several provenances (untrusted predicates, already signed by a trusted key): the one
    that fits target at tag, else the first readable one, with why it does not fit (empty when
    it does), and why each unreadable one could not be read. (None, [], unreadable) when none
    can be read. What the rollout's pre-flight and `rig images verify` both decide on."""
    readable, unreadable = [], []
    for predicate in predicates:
        try:
            readable.append(summary(predicate))
        except RigError as e:
            unreadable.append(str(e))
    fitting = [found for found in readable if fits(found, target, tag)]
    if fitting:
        return fitting[0], [], unreadable
    if readable:
        return readable[0], problems(readable[0], target, tag), unreadable
    return None, [], unreadable
