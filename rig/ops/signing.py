"""Signing what a build pushed, and checking signatures before a rollout touches a host.

    signing_key(fleet)                 the private key, loaded before anything is built
    sign_pushed(...)                   a cosign signature for each image pushed or tagged now
    signature_problems(...)            one line per image a rollout would run unsigned

Keys and formats: rig/supply (cosign's encrypted key format, simple signing); where the
signatures live: rig/supply/cosign.py (`sha256-<hex>.sig` tags)."""

from __future__ import annotations

import os

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


def sign_pushed(registry, images, rows: list[dict], targets: set[str], key, say) -> tuple[int, int]:
    """Sign each image in `targets` (pushed or tagged by this command) at its digest; images
    that were already in the registry are left as they are (`rig images sign` signs those).
    Returns (signed now, already signed by this key)."""
    from ..supply import cosign

    digests = {row["image"]: row["digest"] for row in rows}
    signed = already = 0
    for image in images:
        digest = digests.get(image.ref)
        if image.target not in targets or not digest:
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
    result = sign_pushed(registry, built, rows, {i.target for i in built}, key, say)
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
    without a valid signature by one of `keys` naming that very repository and digest."""
    from ..supply import cosign
    from ..supply import keys as key_tools

    problems, seen = [], set()
    for release in (r for rs in releases.values() for r in rs):
        if (release.repository, release.digest) in seen:
            continue
        seen.add((release.repository, release.digest))
        path = release.repository.removeprefix(f"{fleet.registry.host}/")
        try:
            found = cosign.signers(registry, path, release.repository, release.digest, keys)
        except RigError as e:
            problems.append(f"{release.repository}:{release.tag} ({release.digest[:19]}): its "
                            f"signatures could not be read: {e}")
            continue
        if not found:
            problems.append(f"{release.repository}:{release.tag} ({release.digest[:19]}): no valid "
                            "signature by key " + ", ".join(key_tools.short_id(k) for k in keys)
                            + " (pushed by someone else, or never signed)")
    if problems:
        problems.append("`rig images verify --tag TAG` shows what is signed; `rig images sign "
                        "--tag TAG` signs the images at TAG once you trust them")
    return problems
