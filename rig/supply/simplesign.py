"""cosign's key-based image signatures ("simple signing").

The signature of image `<repo>@sha256:X` is stored as tag `sha256-X.sig` in `<repo>`: an OCI image
manifest whose layers (media type `MEDIA_TYPE`) are payloads, each with its base64 ECDSA P-256 / SHA-256
DER signature in the layer annotation `ANNOTATION`. The payload is sigstore's SimpleContainerImage JSON,
compact, keys in struct order (sigstore/sigstore pkg/signature/payload/payload.go):
`{"critical":{"identity":{"docker-reference":R},"image":{"docker-manifest-digest":D},"type":T},"optional":null}`
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from rig.errors import RigError
from rig.supply.keys import is_p256

MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# distribution/reference's grammar for a name (no tag, no digest); IPv6 hosts are not supported
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*")


def check_digest(digest: object, what: str = "the digest") -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise RigError(f"{what} {str(digest)[:80]!r} is not sha256: followed by 64 lowercase hex digits")
    return digest


def check_repository(repository: object, what: str = "the repository") -> str:
    if not isinstance(repository, str) or len(repository) > 255 or not _REPOSITORY.fullmatch(repository):
        raise RigError(f"{what} {str(repository)[:80]!r} is not an image repository (no tag, no digest)")
    return repository


def sig_tag(digest: str) -> str:
    """The tag holding the signatures of image `digest`: `sha256-<hex>.sig`."""
    return check_digest(digest).replace(":", "-", 1) + ".sig"


def att_tag(digest: str) -> str:
    """The tag holding the attestations of image `digest`: `sha256-<hex>.att`."""
    return check_digest(digest).replace(":", "-", 1) + ".att"


def payload(repository: str, digest: str) -> bytes:
    """The simple-signing payload for image `repository@digest`, byte for byte as cosign writes it."""
    doc = {
        "critical": {
            "identity": {"docker-reference": check_repository(repository)},
            "image": {"docker-manifest-digest": check_digest(digest)},
            "type": PAYLOAD_TYPE,
        },
        "optional": None,
    }
    # Go's encoding/json: no spaces; it escapes <, > and & but a valid repository has none of them
    return json.dumps(doc, separators=(",", ":")).encode()


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_payload(data: bytes, name: str = "the signature payload") -> tuple[str, str]:
    """(repository, digest) that a simple-signing payload names, after strict checks."""
    if not isinstance(data, bytes | bytearray):
        raise RigError(f"{name} is not bytes")
    try:
        doc = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise RigError(f"{name} is not a JSON document (or has duplicate keys)") from None
    if not isinstance(doc, dict):
        raise RigError(f"{name} is not a JSON object")
    critical = doc.get("critical")
    if not isinstance(critical, dict):
        raise RigError(f"{name} has no 'critical' object")
    if critical.get("type") != PAYLOAD_TYPE:
        raise RigError(f"{name}: critical.type is not {PAYLOAD_TYPE!r}")
    identity, image = critical.get("identity"), critical.get("image")
    if not isinstance(identity, dict) or "docker-reference" not in identity:
        raise RigError(f"{name} has no critical.identity.docker-reference")
    if not isinstance(image, dict) or "docker-manifest-digest" not in image:
        raise RigError(f"{name} has no critical.image.docker-manifest-digest")
    optional = doc.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise RigError(f"{name}: 'optional' is neither null nor an object")
    repository = check_repository(identity["docker-reference"], f"{name}: the docker-reference")
    digest = check_digest(image["docker-manifest-digest"], f"{name}: the docker-manifest-digest")
    return repository, digest


def sign(private_key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    """Base64 of the ASN.1 DER ECDSA P-256 / SHA-256 signature of `data` (the annotation's value)."""
    if not is_p256(private_key) or not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise RigError("rig signs with ECDSA P-256 private keys only")
    return base64.b64encode(private_key.sign(bytes(data), ec.ECDSA(hashes.SHA256()))).decode("ascii")


def verify(public_key: ec.EllipticCurvePublicKey, data: bytes, signature_b64: str) -> bool:
    """Whether `signature_b64` (base64 DER) is `public_key`'s signature of `data`; False on any bad input."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not is_p256(public_key):
        return False
    if not isinstance(data, bytes | bytearray) or not isinstance(signature_b64, str | bytes):
        return False
    try:
        signature = base64.b64decode(signature_b64.strip(), validate=True)
        public_key.verify(signature, bytes(data), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True
