"""Attestations in the registry, as cosign stores them: DSSE envelopes at `sha256-<hex>.att`.

Each layer of the manifest tagged `sha256-X.att` (media type `application/vnd.dsse.envelope.v1+json`,
annotation `predicateType`) is a DSSE envelope (rig/supply/dsse.py) whose payload is an in-toto
Statement v1 about `<repo>@sha256:X`. rig writes two kinds: SLSA provenance v1 (provenance.py) and an
SPDX SBOM (sbom.py). New attestations go first; others' are kept.

    attest(registry, path, repository, digest, key, predicate_type, predicate, same) -> True if added
    statements(registry, path, repository, digest, keys, predicate_type)             -> [Attested]

A statement counts only when its envelope verifies with a trusted key, its predicateType is the
one asked for (in the layer's annotation and in the statement), and its subject names exactly
`repository` and `digest`: a valid attestation of another image does not count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rig.errors import RigError

from . import cosign, dsse, simplesign

PREDICATE_ANNOTATION = "predicateType"
MAX_ATTESTATIONS = 32            # layers read from one attestation manifest
MAX_ENVELOPE = 4 * 1024 * 1024   # the registry client's answer cap (an SBOM without file lists fits)


@dataclass(frozen=True)
class Attested:
    predicate: dict
    key: object          # the trusted public key whose signature verified


def statement_about(payload: bytes, repository: str, digest: str, predicate_type: str) -> dict:
    """The predicate of an in-toto Statement v1 (JSON bytes) about exactly repository@digest with
    that predicate type; RigError otherwise (pure: the statement is untrusted input)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise RigError("the statement is not JSON") from None
    if not isinstance(doc, dict) or doc.get("_type") != dsse.STATEMENT_TYPE:
        raise RigError(f"the statement is not an in-toto Statement v1 ({dsse.STATEMENT_TYPE})")
    if doc.get("predicateType") != predicate_type:
        raise RigError(f"the statement's predicateType is {str(doc.get('predicateType'))[:80]!r}, "
                       f"not {predicate_type}")
    subjects = doc.get("subject")
    hex_digest = digest.removeprefix("sha256:")
    if not isinstance(subjects, list) or not any(
            isinstance(s, dict) and s.get("name") == repository
            and isinstance(s.get("digest"), dict) and s["digest"].get("sha256") == hex_digest
            for s in subjects):
        raise RigError(f"the statement is not about {repository}@{digest[:19]}")
    predicate = doc.get("predicate")
    if not isinstance(predicate, dict):
        raise RigError("the statement's predicate is not a JSON object")
    return predicate


def verified(layers: list[tuple[dict, bytes]], repository: str, digest: str, keys: list,
             predicate_type: str) -> list[Attested]:
    """The statements among `layers` (layer, envelope bytes) that count (pure)."""
    return [found for _, found in _verified_layers(layers, repository, digest, keys, predicate_type)]


def _verified_layers(layers, repository, digest, keys, predicate_type) -> list[tuple[str, Attested]]:
    """(layer digest, statement) for each layer that counts."""
    found = []
    for layer, blob in layers:
        if layer.get("annotations", {}).get(PREDICATE_ANNOTATION) != predicate_type:
            continue
        try:
            envelope = json.loads(blob)
            if not isinstance(envelope, dict) or envelope.get("payloadType") != dsse.INTOTO:
                continue
            payload, key = dsse.verify_envelope(envelope, keys)
            found.append((layer["digest"], Attested(statement_about(payload, repository, digest,
                                                                    predicate_type), key)))
        except (RigError, ValueError, UnicodeDecodeError):
            continue
    return found


def _read(registry, path: str, digest: str, predicate_type: str):
    return cosign.read_layers(registry, path, simplesign.att_tag(digest), dsse.ENVELOPE_MEDIA_TYPE,
                              MAX_ENVELOPE, MAX_ATTESTATIONS,
                              lambda a: a.get(PREDICATE_ANNOTATION) == predicate_type)


def statements(registry, path: str, repository: str, digest: str, keys: list,
               predicate_type: str) -> list[Attested]:
    """The trusted statements of `predicate_type` about repository@digest (only the layers with
    that predicate type are fetched: an SBOM is not downloaded to check a provenance)."""
    return verified(_read(registry, path, digest, predicate_type)[1], repository, digest, keys,
                    predicate_type)


def attest(registry, path: str, repository: str, digest: str, private_key, predicate_type: str,
           predicate: dict, same=lambda old, new: True, replaces=lambda old: False) -> bool:
    """Add a signed statement about repository@digest, unless one by this key of that predicate
    type is there for which `same(old, new)` holds. The new layer goes first and the manifest's
    other layers (all predicate types, other keys') are kept, but for this key's statements of
    the type for which `replaces(old)` holds (the new one supersedes them); it is read back
    afterwards."""
    public = private_key.public_key()
    manifest, layers = _read(registry, path, digest, predicate_type)
    mine = _verified_layers(layers, repository, digest, [public], predicate_type)
    if any(same(a.predicate, predicate) for _, a in mine):
        return False
    superseded = {layer for layer, a in mine if replaces(a.predicate)}
    if manifest is not None and superseded:
        manifest = {**manifest, "layers": [x for x in manifest.get("layers", [])
                                           if not (isinstance(x, dict) and x.get("digest") in superseded)]}
    body = json.dumps(dsse.statement(repository, digest, predicate_type, predicate),
                      separators=(",", ":"), sort_keys=True).encode()
    envelope = json.dumps(dsse.envelope(dsse.INTOTO, body, private_key), separators=(",", ":")).encode()
    if len(envelope) > MAX_ENVELOPE:
        raise RigError(f"{repository}@{digest[:19]}: the {predicate_type} attestation is "
                       f"{len(envelope) // 1024} KiB, over the {MAX_ENVELOPE // 1024 // 1024} MiB a "
                       "registry answer may have")
    cosign.add_layer(registry, path, simplesign.att_tag(digest), manifest, envelope,
                     dsse.ENVELOPE_MEDIA_TYPE, {PREDICATE_ANNOTATION: predicate_type,
                                                "dev.cosignproject.cosign/signature": ""},
                     MAX_ATTESTATIONS)
    back = verified(_read(registry, path, digest, predicate_type)[1], repository, digest, [public],
                    predicate_type)
    if not any(same(a.predicate, predicate) for a in back):
        raise RigError(f"{repository}@{digest[:19]}: the attestation did not stay in the registry "
                       "(another signer wrote the manifest at the same moment?): build again")
    return True
