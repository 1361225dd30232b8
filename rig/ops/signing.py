"""Signing what a build pushed, and checking signatures before a rollout touches a host.

    signing_key(fleet)                 the private key, loaded before anything is built
    sign_pushed(...)                   a cosign signature for each image pushed or tagged now
    signature_problems(...)            one line per image a rollout would run unsigned

Keys and formats: rig/supply (cosign's encrypted key format, simple signing); where the
signatures live: rig/supply/cosign.py (`sha256-<hex>.sig` tags)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

from ..errors import RigError


def signing_key(fleet):
    """build.signing.key, decrypted with the password from build.signing.password_env; None
    when the spec signs nothing. Raises RigError (naming the file or the variable, never the
    password) before any image is built."""
    from ..supply import keys

    spec = fleet.build.signing
    if not spec.key:
        return None
    path = fleet.path(spec.key)
    password = None
    if not keys.is_encrypted(path):
        if path.stat().st_mode & 0o077:
            raise RigError(f"build.signing.key {spec.key}: an unencrypted private key readable by "
                           "others (chmod 600, or use an encrypted key: rig keys generate)")
    else:
        value = os.environ.get(spec.password_env) if spec.password_env else None
        if not value and spec.password_file:
            value = _read_private(fleet.path(spec.password_file), spec.password_file)
        if not value:
            raise RigError(f"build.signing.key {spec.key} is encrypted and its password is not "
                           "given: " + (f"{spec.password_env} is not set" if spec.password_env
                                        else "set build.signing.password_env (or password_file)")
                           + "; nothing was built or pushed")
        password = value.encode()
    return keys.load_private_key(path, password)


def _read_private(path, shown: str) -> str:
    """A password file: a regular file readable by its owner only, like a registry token file;
    its content is the password, one trailing newline aside (as `echo pw > file` writes it)."""
    import stat

    what = f"build.signing.password_file {shown}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)   # a FIFO must not hang the command
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise RigError(f"{what}: not a regular file")
            if info.st_mode & 0o077:
                raise RigError(f"{what}: readable by others (chmod 600)")
            data = os.read(fd, 4097)
        finally:
            os.close(fd)
    except OSError as e:
        raise RigError(f"{what}: {e.strerror or e}") from None
    if len(data) > 4096:
        raise RigError(f"{what}: over 4 KiB, not a password")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise RigError(f"{what}: not UTF-8 text") from None
    return text[:-1] if text.endswith("\n") else text


def public_keys(fleet) -> list:
    from ..supply import keys

    return [keys.load_public_key(fleet.path(p)) for p in fleet.build.signing.public_keys]


def sign_pushed(registry, images, rows: list[dict], key, say) -> tuple[int, int]:
    """Sign each of `images` (pushed or tagged by this command, or named by the operator) at
    the digest `rows` give it. Returns (signed now, already signed by this key)."""
    from ..supply import cosign

    digests = {row["image"]: row["digest"] for row in rows}
    signed = already = 0
    for image in images:
        digest = digests.get(image.ref)
        if not digest:
            continue
        if cosign.sign(registry, image.path, image.repository, digest, key):
            signed += 1
        else:
            already += 1
    if signed or already:
        say(f"signed {signed} image(s)" + (f", {already} already signed by this key"
                                            if already else ""))
    return signed, already


def sign_built(registry, plan, rows: list[dict], pushed: dict[str, set[str]], key, say
               ) -> tuple[int, int]:
    """After a build's push: sign what this build pushed, at the digest the build host's
    engine pushed (never what the registry merely says the tag holds: someone may have moved
    it). Images reused from earlier sources are not signed here (signing them would sign
    whatever their source tag holds); one this key never signed is named."""
    from ..errors import RigError
    from ..supply import cosign

    digests = {row["image"]: row["digest"] for row in rows}
    problems, built = [], []
    for target in plan.build:
        image = plan.image(target)
        if pushed.get(target) is None:
            problems.append(f"{image.ref}: the build host did not say which digest it pushed; "
                            "not signed")
        elif digests.get(image.ref) not in pushed[target]:
            problems.append(f"{image.ref}: the registry holds {str(digests.get(image.ref))[:19]}, "
                            "not what this build pushed "
                            f"({', '.join(sorted(d[:19] for d in pushed[target]))}); not signed")
        else:
            built.append(image)
    result = sign_pushed(registry, built, rows, key, say)
    for target in plan.reuse:
        image = plan.image(target)
        digest = digests.get(image.ref)
        if digest and not cosign.signers(registry, image.path, image.repository, digest,
                                         [key.public_key()]):
            say(f"{image.ref}: reused from {plan.reuse[target]}, which this key never signed: "
                "left unsigned (`rig build --push --rebuild` builds and signs it)")
    if problems:
        raise RigError(*problems, "a rollout will refuse these images until they are signed")
    return result


def signature_problems(fleet, registry, releases: dict, keys: list) -> list[str]:
    """For a rollout's releases (host -> [Release]): one line per image (repository@digest)
    without a valid signature by one of `keys` naming that very repository and digest, and,
    when provenance is required, one per image whose provenance by those keys is missing or
    does not fit (another build target than the host's, another commit than the tag names).
    The images are checked side by side (up to LOOKUPS at once), each image's lines together,
    in the order the images first appear."""
    from ..images import build_tag, image_for
    from ..registry import side_by_side

    # A signature is of the image, checked once for every host; a provenance is of the build
    # target (per machine), checked once per image and target. Each line names the image by the
    # tag it was asked for under, on the first host that asked for it for that target.
    builds: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    for host, host_releases in releases.items():    # image -> target -> (tag asked, build tag)
        for release in host_releases:
            tag = build_tag(fleet, release.service, host, release.tag)
            target = image_for(fleet, release.service, host, tag).target
            builds.setdefault((release.repository, release.digest), {}).setdefault(
                target, (release.tag, tag))
    found = side_by_side(
        lambda image: _image_problems(fleet, registry, image, builds[image], keys), list(builds))
    problems = [line for lines in found for line in lines]
    if problems:
        problems.append("`rig images verify --tag TAG` shows what is signed and attested; `rig "
                        "images sign --tag TAG` signs the images at TAG once you trust them; "
                        "`rig build --push --rebuild --tag TAG` builds, signs and attests them anew")
    return problems


def _image_problems(fleet, registry, image: tuple[str, str],
                    targets: dict[str, tuple[str, str]], keys: list) -> list[str]:
    """One image's lines: its signature, then (signed) each build target's provenance.
    targets: build target -> (the tag asked for, the build tag its provenance must name)."""
    from ..supply import cosign
    from ..supply import keys as key_tools

    repository, digest = image
    path = repository.removeprefix(f"{fleet.registry.host}/")

    def name(asked: str) -> str:
        return f"{repository}:{asked} ({digest[:19]})"
    first = name(next(iter(targets.values()))[0])
    try:
        if not cosign.signers(registry, path, repository, digest, keys):
            return [f"{first}: no valid signature by key "
                    + ", ".join(key_tools.short_id(k) for k in keys)
                    + " (pushed by someone else, or never signed)"]
    except RigError as e:
        return [f"{first}: its signatures could not be read: {e}"]
    if not fleet.requires_provenance:
        return []
    whys = ((asked, provenance_problem(registry, path, repository, digest, keys, target, at))
            for target, (asked, at) in targets.items())
    return [f"{name(asked)}: {why}" for asked, why in whys if why]


def provenance_problem(registry, path: str, repository: str, digest: str, keys: list, target: str,
                       tag: str) -> str | None:
    """Why repository@digest has no trusted provenance fitting `target` at `tag`, or None."""
    from ..supply import attest, provenance

    try:
        found = attest.statements(registry, path, repository, digest, keys, provenance.PREDICATE_TYPE)
    except RigError as e:
        return f"its provenance could not be read: {e}"
    chosen, misfit, unreadable = provenance.judge([a.predicate for a in found], target, tag)
    if chosen is not None:
        return "; ".join(misfit) or None
    if unreadable:
        return f"its signed provenance cannot be read ({unreadable[0]})"
    return ("no provenance signed by a trusted key (built by something other than rig, or its "
            "attestation failed)")


def attest_built(registry, plan, rows: list[dict], signed: set[str], facts: dict, key, say,
                 sbom: bool = True) -> tuple[int, int]:
    """After signing: a SLSA provenance and an SBOM for each image this build pushed and
    signed (`signed`: targets), and a provenance for each reused image whose original has one
    by this key for the same source hash. `facts`: commit, clean, builder, started, finished,
    bases (ref -> digest), args per target. Returns (provenances added, SBOMs added); RigError
    after trying them all, naming each image that failed."""
    from .. import __version__
    from ..images import tree_hash
    from ..supply import attest, provenance
    from ..supply import sbom as sbom_tools

    digests = {row["image"]: row["digest"] for row in rows}
    added = [0, 0]
    problems = []

    def summary(doc: dict):
        try:
            return provenance.summary(doc)
        except RigError:
            return None

    def same(old: dict, new: dict) -> bool:
        """Already said: the same target and sources, for this commit (a reuse statement
        covering it among its commits)."""
        a, b = summary(old), summary(new)
        return bool(a and b and (a.target, a.source_hash) == (b.target, b.source_hash)
                    and set(b.commits) <= set(a.commits) and bool(a.reused_from) == bool(b.reused_from))

    def reuse_of(target: str) -> Callable:
        """This key's earlier reuse statement of the target (the new one lists its commits)."""
        def replaces(old: dict) -> bool:
            found = summary(old)
            return bool(found and found.reused_from and found.target == target
                        and found.source_hash == plan.hashes[target])
        return replaces

    def build_of(image, reused_from=None, also=()) -> provenance.Build:
        folder = facts["spec_dir"] / image.context
        dockerfile = folder / "Dockerfile"
        bases = dict(facts["bases"].get(image.target, {}))
        return provenance.Build(
            target=image.target, tag=plan.tag, commit=facts["commit"], clean=facts["clean"],
            source_hash=plan.hashes[image.target], context=image.context,
            context_digest=tree_hash(folder),
            dockerfile_digest=hashlib.sha256(dockerfile.read_bytes()).hexdigest()
            if dockerfile.is_file() else "",
            args=image.args, bases=bases, builder=facts["builder"], rig_version=__version__,
            started=facts["started"], finished=facts["finished"], reused_from=reused_from,
            source_url=facts.get("source_url") or "", also=tuple(also))

    jobs = [(plan.image(t), None, ()) for t in plan.build if t in signed]
    for target, src in plan.reuse.items():
        image = plan.image(target)
        digest = digests.get(image.ref)
        if not digest:
            continue
        try:
            originals = [s for s in (summary(a.predicate) for a in attest.statements(
                registry, image.path, image.repository, digest, [key.public_key()],
                provenance.PREDICATE_TYPE)) if s and s.target == target
                and s.source_hash == plan.hashes[target]]
        except RigError:
            originals = []
        if originals:
            jobs.append((image, src, {c for o in originals if o.reused_from for c in o.commits}))
        else:
            problems.append(f"{image.ref}: reused from {src}, which has no provenance of this key "
                            "for the same sources: none written")
    for image, reused_from, also in jobs:
        digest = digests.get(image.ref)
        try:
            if attest.attest(registry, image.path, image.repository, digest, key,
                             provenance.PREDICATE_TYPE,
                             provenance.predicate(build_of(image, reused_from, also)), same,
                             reuse_of(image.target) if reused_from else lambda old: False):
                added[0] += 1
            if sbom and not reused_from and not attest.statements(
                    registry, image.path, image.repository, digest, [key.public_key()],
                    sbom_tools.PREDICATE_TYPE):
                started = time.monotonic()
                document = sbom_tools.generate(image.repository, digest, registry)
                count = len(sbom_tools.packages(document))
                attest.attest(registry, image.path, image.repository, digest, key,
                              sbom_tools.PREDICATE_TYPE, document)
                added[1] += 1
                say(f"  sbom {image.ref}: {count} packages (syft, {time.monotonic() - started:.1f} s)")
        except (RigError, OSError) as e:
            problems.append(f"{image.ref}: not attested: {e}")
    if added[0] or added[1]:
        say(f"attested {added[0]} provenance(s), {added[1]} SBOM(s)")
    if problems:
        raise RigError(*problems, "a rollout will refuse an image without provenance: `rig build "
                       "--push --rebuild --tag TAG` builds and attests again")
    return added[0], added[1]
