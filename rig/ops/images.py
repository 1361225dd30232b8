"""build and images verify: decide from the registry, build on the build host, push, check."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..build import BuildOptions, LocalExecutor, SshExecutor, plan_build, reuse, run_build, verify_rows
from ..errors import RigError
from ..images import Image, expected_images, source_hashes
from ..tags import GitState, git_state
from .job import Job


@dataclass
class BuildReport:
    tag: str
    registry: str
    states: list[tuple[str, str]]              # (target, present | reuse <src> | build)
    built: int
    reused: int
    present: int
    pushed: bool
    where: str
    rows: list[dict] = field(default_factory=list)   # the registry check after a push
    timings: dict = field(default_factory=dict)
    started: str = ""
    signed: tuple[int, int] | None = None   # (signed now, already signed); None: no key
    attested: tuple[int, int] | None = None  # (provenances, SBOMs) added; None: no key

    @property
    def missing(self) -> int:
        return sum(1 for row in self.rows if not row["digest"])


def parse_build_args(values: tuple[str, ...] | list[str], fleet) -> dict[str, dict[str, str]]:
    """('model_ops_coordinator:FAULT=degraded',) -> {service: {KEY: value}}."""
    result: dict[str, dict[str, str]] = {}
    for value in values:
        service, _, assignment = value.partition(":")
        key, eq, arg = assignment.partition("=")
        if not eq or not key or service not in fleet.services:
            raise RigError(f"--build-arg {value!r}: expected SERVICE:KEY=VALUE with a service "
                           f"of the spec ({', '.join(fleet.services)})")
        result.setdefault(service, {})[key] = arg
    return result


def images_at(job: Job, tag: str, build_args=()) -> list[Image]:
    return expected_images(job.fleet, tag, parse_build_args(build_args, job.fleet))


def bake_preview(job: Job, tag: str, build_args=()) -> dict:
    """The bake file `rig build` would run (touches nothing)."""
    from ..commands.bake import bake_file

    fleet, images = job.fleet, images_at(job, tag, build_args)
    cache = "registry" if fleet.build.cache == "registry" else "inline"
    git = git_state(job.repo)
    return bake_file(fleet, images, source_hashes(fleet, images), build=[i.target for i in images],
                     revision=git.sha if git else "unknown", created=_now(), cache=cache,
                     secret_src=fleet.build.ca_bundle)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_clean(git: GitState | None, tag: str, push: bool, allow_dirty: bool) -> None:
    if push and git and git.dirty and not allow_dirty:
        raise RigError(f"the work tree has uncommitted changes (tag {tag}): commit them, "
                       "or pass --allow-dirty to push anyway")


def build(job: Job, tag: str, push: bool, rebuild: bool, allow_dirty: bool, build_args, say,
          on_plan=None) -> BuildReport:
    """Per image: present -> nothing; same sources pushed -> tag in the registry; else build.
    Pushes only once every target built; then checks every expected image in the registry."""
    from ..registry import client_for
    from .signing import signing_key

    fleet, images = job.fleet, images_at(job, tag, build_args)
    git = git_state(job.repo)
    _check_clean(git, tag, push, allow_dirty)
    hashes = source_hashes(fleet, images)
    registry = client_for(fleet)
    registry.ping()
    plan = plan_build(images, hashes, tag, lambda image, t: registry.manifest_digest(image.path, t),
                      rebuild)
    states = [(i.target, "present" if i.target in plan.present else
               f"reuse    {plan.reuse[i.target]}" if i.target in plan.reuse else "build")
              for i in images]
    if on_plan:
        on_plan(states)
    # the key is needed only when something is pushed or tagged now (a no-change build never
    # pays its scrypt); a wrong password stops the command before any build
    key = signing_key(fleet) if push and (plan.build or plan.reuse) else None
    where = fleet.build.host or "this machine"
    report = BuildReport(tag, fleet.registry.host, states, len(plan.build), len(plan.reuse),
                         len(plan.present), push, where, started=_now())
    if plan.build:
        options = BuildOptions(push=push, rebuild=rebuild, revision=git.sha if git else "unknown",
                               created=_now())
        if fleet.build.host:
            with job.session([fleet.build.host]) as session:
                report.timings = run_build(fleet, plan, options, SshExecutor(session, where), say)
        else:
            report.timings = run_build(fleet, plan, options, LocalExecutor(), say)
    if push:
        reuse(registry, plan, say)
        # what the plan found present was read moments ago; the rest is asked now
        report.rows = verify_rows(registry, images, known=plan.present)
        if key is not None:
            from .signing import attest_built, sign_built

            report.signed = sign_built(registry, plan, report.rows,
                                       report.timings.get("pushed") or {}, key, say)
            report.attested = attest_built(registry, plan, report.rows, set(plan.build),
                                           _provenance_facts(job, plan, report, git), key, say,
                                           sbom=fleet.build.signing.sbom)
    return report


def _provenance_facts(job: Job, plan, report: BuildReport, git: GitState | None) -> dict:
    """What a provenance says about this build besides each image: the commit and whether the
    tree was clean, the builder, the times, each target's base images at their digests (a
    family's BASE_IMAGE as the build host pulled it; a service's family as pushed now)."""
    digests = {row["image"]: row["digest"] for row in report.rows}
    pulled = report.timings.get("bases") or {}
    bases: dict[str, dict[str, str]] = {}
    for target in [*plan.build, *plan.reuse]:
        image = plan.image(target)
        if image.kind == "family":
            ref = image.args.get("BASE_IMAGE", "")
            bases[target] = {ref: pulled[ref]} if ref in pulled else {}
        elif image.family:
            family = plan.image(image.family).tagged(plan.tag)
            bases[target] = {family: digests[family]} if digests.get(family) else {}
    return {"commit": git.sha if git else None, "clean": bool(git and not git.dirty),
            "builder": report.where, "started": report.started,
            "finished": report.timings.get("finished") or _now(), "bases": bases,
            "spec_dir": job.fleet.base_dir, "source_url": job.fleet.build.source_url or ""}


def sign_images(job: Job, tag: str, say) -> tuple[int, int]:
    """Sign every expected image at tag (those already in the registry, pushed before signing
    was set up or by another machine you trust). Returns (signed now, already signed)."""
    from ..registry import client_for
    from .signing import sign_pushed, signing_key

    key = signing_key(job.fleet)
    if key is None:
        raise RigError("build.signing.key is not set: nothing to sign with")
    registry, images = client_for(job.fleet), images_at(job, tag)
    rows = verify_rows(registry, images)
    missing = [row["image"] for row in rows if not row["digest"]]
    if missing:
        raise RigError(*(f"{ref}: not in the registry" for ref in missing),
                       "nothing was signed (build and push the tag first)")
    for row in rows:     # what is signed is the digest each tag holds now: said, one by one
        say(f"  {row['image']} at {row['digest']}")
    return sign_pushed(registry, images, rows, key, say)


def verify_images(job: Job, tag: str) -> list[dict]:
    """One row per expected image at tag: its digest in the registry, or None; with
    build.signing.public_keys, `signed`: the short ids of the keys that signed it ([]: none),
    `provenance`: what its trusted provenance says (None: none), `problem`: why it does not fit
    the image (None: it fits), and `sbom`: the package count of its trusted SBOM (None: none)."""
    from ..registry import client_for
    from ..supply import cosign, keys
    from .signing import public_keys

    registry = client_for(job.fleet)
    images = images_at(job, tag)
    rows = verify_rows(registry, images)
    trusted = public_keys(job.fleet)
    if trusted:
        for image, row in zip(images, rows, strict=True):
            row["signed"] = [keys.short_id(k) for k in cosign.signers(
                registry, image.path, image.repository, row["digest"], trusted)] \
                if row["digest"] else []
            if row["digest"]:
                row.update(_attested(registry, image, row["digest"], trusted, tag))
    return rows


def _attested(registry, image: Image, digest: str, trusted: list, tag: str) -> dict:
    from ..supply import attest, provenance, sbom

    found = None
    chosen, misfit, _ = provenance.judge(
        [a.predicate for a in attest.statements(registry, image.path, image.repository, digest,
                                                trusted, provenance.PREDICATE_TYPE)],
        image.target, tag)
    if chosen is not None:
        found = {"target": chosen.target, "commit": chosen.commit, "clean": chosen.clean,
                 "builder": chosen.builder, "finished": chosen.finished,
                 "reused_from": chosen.reused_from}
    problem = "; ".join(misfit) or None if chosen else "no provenance by a trusted key"
    boms = attest.statements(registry, image.path, image.repository, digest, trusted,
                             sbom.PREDICATE_TYPE)
    count = None
    for statement in boms:
        try:
            count = len(sbom.packages(statement.predicate))
            break
        except RigError:
            continue
    return {"provenance": found, "problem": problem, "sbom": count}


def sbom_of(job: Job, service: str, tag: str, machine: str | None) -> tuple[Image, str, dict]:
    """(image, digest, SPDX document) of a service's image at tag, from its SBOM attestation by
    a trusted key (build.signing.public_keys)."""
    from ..registry import client_for
    from ..supply import attest, sbom

    registry = client_for(job.fleet)
    image, digest, trusted = _one_image(job, registry, service, tag, machine)
    for statement in attest.statements(registry, image.path, image.repository, digest,
                                       trusted, sbom.PREDICATE_TYPE):
        try:
            sbom.packages(statement.predicate)
        except RigError:
            continue
        return image, digest, statement.predicate
    raise RigError(f"{image.ref} ({digest[:19]}): no SBOM attested by a trusted key "
                   "(`rig build --push --rebuild` builds and attests it)")


def provenance_of(job: Job, service: str, tag: str, machine: str | None) -> tuple[Image, str, list]:
    """(image, digest, [trusted provenance predicates]) of a service's image at tag."""
    from ..registry import client_for
    from ..supply import attest, provenance

    registry = client_for(job.fleet)
    image, digest, trusted = _one_image(job, registry, service, tag, machine)
    found = attest.statements(registry, image.path, image.repository, digest, trusted,
                              provenance.PREDICATE_TYPE)
    if not found:
        raise RigError(f"{image.ref} ({digest[:19]}): no provenance attested by a trusted key")
    return image, digest, [a.predicate for a in found]


def _one_image(job: Job, registry, service: str, tag: str, machine: str | None) -> tuple[Image, str, list]:
    from .signing import public_keys

    fleet = job.fleet
    if service not in fleet.services and service not in fleet.families:
        raise RigError(f"{service!r} is not a service or family of the spec (services: "
                       f"{', '.join(fleet.services)}; families: {', '.join(fleet.families)})")
    trusted = public_keys(fleet)
    if not trusted:
        raise RigError("build.signing.public_keys lists no key: no attestation can be trusted")
    kind = "service" if service in fleet.services else "family"
    images = [i for i in images_at(job, tag) if i.name == service and i.kind == kind]
    if machine and kind == "service" and not fleet.services[service].per_machine:
        machine = None     # one image for every machine: --machine changes nothing
    if machine:
        images = [i for i in images if i.machine == machine]
    if len(images) != 1:
        machines = ", ".join(sorted(str(i.machine) for i in images))
        raise RigError(f"{service}: one image per machine ({machines}): pick one with --machine"
                       if images else f"{service}: no image for machine {machine!r}")
    image = images[0]
    digest = registry.manifest_digest(image.path, image.tag)
    if not digest:
        raise RigError(f"{image.ref}: not in the registry")
    return image, digest, trusted
