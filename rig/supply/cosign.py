"""Image signatures in the registry, as cosign stores them (key-based, no transparency log).

The signatures of `<repo>@sha256:X` are the layers of an OCI image manifest tagged
`sha256-X.sig` in `<repo>` (cosign's specs/SIGNATURE_SPEC.md): each layer's blob is a
simple-signing payload naming the repository and digest, its annotation the base64 signature.
A new signature is added as one more layer: signatures others made are kept.

    sign(registry, path, repository, digest, key)         -> True when a signature was added
    signers(registry, path, repository, digest, keys)      -> the keys that signed it

`registry` is a rig.registry.RegistryClient (manifest, blob, push_blob, put_manifest); `path`
is the repository's path in that registry, `repository` its full name (`host/path`), which
is what a payload must name: a valid signature of another repository's image does not count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rig.errors import RigError

from . import simplesign

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MAX_SIGNATURES = 64     # layers read from one signature manifest (each is a blob fetch)
MAX_PAYLOAD = 64 * 1024  # a simple-signing payload is a few hundred bytes


@dataclass(frozen=True)
class Signature:
    payload: bytes
    signature: str      # base64 DER, from the layer's annotation


def _manifest_doc(raw: bytes, what: str) -> dict:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise RigError(f"{what}: the signature manifest is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("layers", []), list):
        raise RigError(f"{what}: the signature manifest is not an image manifest")
    return doc


def read(registry, path: str, digest: str) -> tuple[dict | None, list[Signature]]:
    """(the signature manifest or None, the signatures in it)."""
    doc, found = read_layers(registry, path, simplesign.sig_tag(digest), simplesign.MEDIA_TYPE,
                             MAX_PAYLOAD, MAX_SIGNATURES,
                             lambda a: isinstance(a.get(simplesign.ANNOTATION), str))
    return doc, [Signature(blob, layer["annotations"][simplesign.ANNOTATION])
                 for layer, blob in found]


def read_layers(registry, path: str, tag: str, media_type: str, max_size: int, max_layers: int,
                wanted=lambda annotations: True) -> tuple[dict | None, list[tuple[dict, bytes]]]:
    """(the manifest at `tag` or None, [(layer, its blob)]) for the first `max_layers` layers of
    `media_type` whose size is within `max_size` and whose annotations `wanted` accepts; a
    layer whose blob cannot be read is left out (it does not hide the others)."""
    found = registry.manifest(path, tag)
    if found is None:
        return None, []
    doc = _manifest_doc(found[0], f"{path}:{tag[:26]}")
    layers = []
    for layer in _layers(doc)[:max_layers]:
        annotations = layer.get("annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        size = layer.get("size")
        if layer.get("mediaType") != media_type or not isinstance(size, int) \
                or not 0 < size <= max_size or not wanted(annotations):
            continue
        try:
            blob = registry.blob(path, simplesign.check_digest(layer.get("digest")))
        except RigError:
            continue
        layers.append(({**layer, "annotations": annotations}, blob))
    return doc, layers


def _layers(doc: dict | None) -> list[dict]:
    """The manifest's layers that are objects with a digest (junk ones are dropped)."""
    return [layer for layer in (doc or {}).get("layers", [])
            if isinstance(layer, dict) and isinstance(layer.get("digest"), str)]


def verified_by(signatures: list[Signature], repository: str, digest: str,
                public_keys: list) -> list:
    """The public keys with a valid signature over a payload that names exactly
    `repository` and `digest` (pure)."""
    found = []
    for signature in signatures:
        try:
            named = simplesign.parse_payload(signature.payload)
        except RigError:
            continue
        if named != (repository, digest):
            continue
        for key in public_keys:
            if key not in found and simplesign.verify(key, signature.payload, signature.signature):
                found.append(key)
    return found


def signers(registry, path: str, repository: str, digest: str, public_keys: list) -> list:
    return verified_by(read(registry, path, digest)[1], repository, digest, public_keys)


def sign(registry, path: str, repository: str, digest: str, private_key) -> bool:
    """Sign `repository@digest` with the key, unless a signature by it is there already. The
    new signature goes first (a manifest stuffed with junk layers cannot push it past what is
    read), and is read back: two signers racing on one manifest lose no signature unnoticed."""
    public = private_key.public_key()
    manifest, signatures = read(registry, path, digest)
    if verified_by(signatures, repository, digest, [public]):
        return False
    data = simplesign.payload(repository, digest)
    add_layer(registry, path, simplesign.sig_tag(digest), manifest, data, simplesign.MEDIA_TYPE,
              {simplesign.ANNOTATION: simplesign.sign(private_key, data)}, MAX_SIGNATURES)
    if not verified_by(read(registry, path, digest)[1], repository, digest, [public]):
        raise RigError(f"{repository}@{digest[:19]}: the signature did not stay in the registry "
                       "(another signer wrote the manifest at the same moment?): sign again")
    return True


def add_layer(registry, path: str, tag: str, manifest: dict | None, data: bytes, media_type: str,
              annotations: dict, max_layers: int) -> None:
    """Put `data` as the first layer of the manifest at `tag`, keeping the layers `manifest`
    (what was read there) had, up to `max_layers`: cosign's layout for signatures (`.sig`)
    and attestations (`.att`)."""
    layer = {"mediaType": media_type, "size": len(data), "digest": registry.push_blob(path, data),
             "annotations": annotations}
    layers = [layer, *_layers(manifest)][:max_layers]
    config = json.dumps({"architecture": "", "config": {}, "created": "0001-01-01T00:00:00Z",
                         "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
                         "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]}},
                        separators=(",", ":")).encode()
    body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                       "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": len(config),
                                  "digest": registry.push_blob(path, config)},
                       "layers": layers}, separators=(",", ":")).encode()
    registry.put_manifest(path, tag, body, MANIFEST_MEDIA_TYPE)
