"""DSSE v1 envelopes (secure-systems-lab/dsse) around in-toto Statements: cosign's attestations.

An attestation of image `sha256:X` lives at tag `sha256-X.att`; each layer (media type
`ENVELOPE_MEDIA_TYPE`, annotation `predicateType`) is an envelope whose payloadType is `INTOTO` and whose
payload is an in-toto Statement v1. The signature covers PAE(payloadType, payload), not the JSON.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from rig.errors import RigError
from rig.supply.keys import is_p256
from rig.supply.simplesign import check_digest

INTOTO = "application/vnd.in-toto+json"
ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"

_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}|[A-Za-z0-9_-]*={0,2}")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signatures sign."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), bytes(payload))


def _b64(value: object, what: str, name: str) -> bytes:
    """Standard or URL-safe base64, padded or not (the DSSE protocol allows all four)."""
    if not isinstance(value, str) or not _B64.fullmatch(value):
        raise RigError(f"{name}: {what} is not a base64 string")
    padded = value.rstrip("=")
    padded += "=" * (-len(padded) % 4)
    try:
        return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        raise RigError(f"{name}: {what} is not valid base64") from None


def envelope(payload_type: str, payload: bytes, private_key, keyid: str = "") -> dict:
    """A DSSE envelope of `payload`, signed (DER ECDSA P-256 / SHA-256) by `private_key`."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not is_p256(private_key):
        raise RigError("rig signs with ECDSA P-256 private keys only")
    payload = bytes(payload)
    sig = private_key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode("ascii")}],
    }


def _verifies(public_key, signature: bytes, message: bytes) -> bool:
    forms = [signature]
    if len(signature) == 64:  # raw r||s, as the DSSE test vector and some signers write it
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        forms.append(encode_dss_signature(r, s))
    for form in forms:
        try:
            public_key.verify(form, message, ec.ECDSA(hashes.SHA256()))
            return True
        except (InvalidSignature, ValueError, TypeError):
            continue
    return False


def verify_envelope(env: dict, public_keys: list, name: str = "the envelope") -> tuple[bytes, object]:
    """(payload, the public key whose signature verified), or RigError. One valid signature suffices."""
    if not isinstance(env, dict):
        raise RigError(f"{name} is not a JSON object")
    payload_type = env.get("payloadType")
    if not isinstance(payload_type, str):
        raise RigError(f"{name} has no payloadType string")
    payload = _b64(env.get("payload"), "the payload", name)
    signatures = env.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise RigError(f"{name} has no signatures")
    decoded = []
    for i, entry in enumerate(signatures):
        if not isinstance(entry, dict):
            raise RigError(f"{name}: signature {i + 1} is not an object")
        keyid = entry.get("keyid", "")
        if not isinstance(keyid, str):
            raise RigError(f"{name}: signature {i + 1} has a keyid that is not a string")
        decoded.append(_b64(entry.get("sig"), f"signature {i + 1}", name))
    keys = [k for k in (public_keys if isinstance(public_keys, list | tuple) else [])
            if isinstance(k, ec.EllipticCurvePublicKey) and is_p256(k)]
    if not keys:
        raise RigError(f"no ECDSA P-256 public key to verify {name} with")
    message = pae(payload_type, payload)
    for signature in decoded:
        for key in keys:
            if _verifies(key, signature, message):
                return payload, key
    raise RigError(
        f"{name}: none of its {len(decoded)} signature(s) verifies with the {len(keys)} trusted key(s)"
    )


def statement(subject_name: str, digest: str, predicate_type: str, predicate: dict) -> dict:
    """An in-toto Statement v1 about one subject, `subject_name` at `digest` (sha256:<hex>)."""
    check_digest(digest)
    if not isinstance(subject_name, str) or not subject_name:
        raise RigError("the attestation's subject needs a name")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise RigError("the attestation needs a predicate type")
    if not isinstance(predicate, dict):
        raise RigError("the attestation's predicate must be a JSON object")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
