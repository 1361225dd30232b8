"""rig images sign, sbom and provenance, rig keys generate: the supply chain's verbs."""

from __future__ import annotations

import json

import click

from .common import CONTEXT, Context, echo, friendly, inventory_option, say_line
from .images import images, resolve_tag, tag_option


def machine_option(func):
    return click.option("--machine", default=None, metavar="PROFILE",
                        help="Which machine's image, for a service built per machine.")(func)


@images.command("sign")
@inventory_option
@tag_option
@click.pass_obj
@friendly
def images_sign(obj: Context, inventory: str | None, tag: str | None) -> None:
    """Sign every image the spec expects at TAG with build.signing.key (cosign's format, tag
    sha256-<digest>.sig beside the image). `rig build --push` signs and attests what it pushes;
    this signs images pushed before signing was set up, once you trust them. An image already
    signed by the key is left as it is. It writes no provenance (rig did not see the build):
    rollouts refuse such images unless rollout.require_provenance is false.

    \b
    Example:
      RIG_SIGNING_PASSWORD=... rig images sign --tag 20261123-1a2b3c4d"""
    from ..ops.images import sign_images

    job, tag = obj.job(inventory), resolve_tag(obj, tag)
    signed, already = sign_images(job, tag, say_line)
    echo(f"signed {signed} image(s) at {tag}; {already} were signed by this key already")


@images.command("sbom")
@click.argument("service")
@inventory_option
@tag_option
@machine_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole SPDX document as JSON.")
@click.pass_obj
@friendly
def images_sbom(obj: Context, service: str, inventory: str | None, tag: str | None,
                machine: str | None, as_json: bool) -> None:
    """The packages in SERVICE's image at TAG (a family's name works too), from the SBOM rig
    attested when it pushed the image (syft, SPDX 2.3), signed by one of
    build.signing.public_keys. --json prints the SPDX document itself.

    \b
    Example:
      rig images sbom model_ops_coordinator --tag 20261123-1a2b3c4d --machine mainpc"""
    from ..ops.images import sbom_of
    from ..supply.sbom import packages

    job, tag = obj.job(inventory), resolve_tag(obj, tag)
    image, digest, document = sbom_of(job, service, tag, machine)
    if as_json:
        echo(json.dumps(document, indent=2))
        return
    found = packages(document)
    echo(f"{image.ref} ({digest[:19]}): {len(found)} packages")
    width = max((len(name) for name, _ in found), default=0)
    for name, version in found:
        echo(f"  {name:<{width}}  {version}")


@images.command("provenance")
@click.argument("service")
@inventory_option
@tag_option
@machine_option
@click.pass_obj
@friendly
def images_provenance(obj: Context, service: str, inventory: str | None, tag: str | None,
                      machine: str | None) -> None:
    """The SLSA provenance (v1) of SERVICE's image at TAG, signed by one of
    build.signing.public_keys: build target, commit and whether the tree was clean, builder,
    base images by digest, build arguments, times. Printed as JSON, newest first.

    \b
    Example:
      rig images provenance model_ops_coordinator --tag 20261123-1a2b3c4d --machine pc2"""
    from ..ops.images import provenance_of

    job, tag = obj.job(inventory), resolve_tag(obj, tag)
    image, digest, predicates = provenance_of(job, service, tag, machine)
    echo(f"{image.ref} ({digest[:19]}): {len(predicates)} provenance statement(s)")
    echo(json.dumps(predicates, indent=2))


@click.group(context_settings=CONTEXT)
def keys() -> None:
    """Signing keys (cosign's format)."""


@keys.command("generate")
@click.option("--out", "folder", default=".", show_default=True, metavar="DIR",
              help="Folder for cosign.key (0600) and cosign.pub; existing files are not replaced.")
@click.option("--password-env", "password_env", default="RIG_SIGNING_PASSWORD", show_default=True,
              metavar="VAR", help="Name of the variable holding the new key's password.")
@friendly
def keys_generate(folder: str, password_env: str) -> None:
    """A new ECDSA P-256 key pair in cosign's format: cosign.key encrypted with the password in
    the named variable (scrypt, then nacl/secretbox, as `cosign generate-key-pair` writes it),
    and cosign.pub. Point build.signing.key at the first and build.signing.public_keys at the
    second; `cosign verify --key cosign.pub --insecure-ignore-tlog IMAGE` checks what rig signs.

    \b
    Example:
      export RIG_SIGNING_PASSWORD=...   # from your password manager, not typed in argv
      rig keys generate --out keys/"""
    import os
    from pathlib import Path

    from ..errors import RigError
    from ..supply.keys import generate_encrypted

    password = os.environ.get(password_env)
    if not password:
        raise RigError(f"{password_env} is not set: put the new key's password in it (the "
                       "password is never taken from the command line)")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / "cosign.key", out / "cosign.pub"
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise RigError(f"{path} exists: not replaced (move it away first)")
    key_pem, pub_pem = generate_encrypted(password.encode())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW   # never through a link
    with open(os.open(private, flags, 0o600), "wb") as f:
        f.write(key_pem)
    with open(os.open(public, flags, 0o644), "wb") as f:
        f.write(pub_pem)
    echo(f"wrote {private} (0600, encrypted) and {public}")


COMMANDS = [keys]
