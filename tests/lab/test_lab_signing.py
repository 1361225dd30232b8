"""Signed images on the real lab: `rig build --push` signs what it pushes with the lab's key
(cosign's encrypted format, `rig lab up`), `rig images verify` names the signer, the signature
verifies with a few lines of plain `cryptography` from what the registry holds, and a rollout
refuses, before any host changes, an image pushed under a signed tag by someone else and an
image whose signature was replaced by another key's."""

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import copy_spec, registry_client, rig_at, rig_containers

SERVICE = "affective_processing_center"
run, client, containers = rig_at, registry_client, rig_containers


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    spec = copy_spec(tmp_path_factory.mktemp("signing"))
    run(spec, "build", "--push", "--tag", "sig-1")
    result = run(spec, "rollout", "--tag", "sig-1", "--no-verify", "--break-lock")
    assert result.returncode == 0, result.stdout + result.stderr
    return spec


def test_every_pushed_image_is_signed_and_verifies_independently(spec):
    shown = run(spec, "images", "verify", "--tag", "sig-1")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rows = [line for line in shown.stdout.splitlines() if "10.77.0.1:5000/" in line]
    assert rows and all("signed by " in line for line in rows), shown.stdout
    public = serialization.load_pem_public_key((spec / ".lab/signing/cosign.pub").read_bytes())
    registry = client(spec)
    path = f"rig/{SERVICE}"
    digest = registry.manifest_digest(path, "sig-1")
    raw, _ = registry.manifest(path, "sha256-" + digest[7:] + ".sig")
    [layer] = json.loads(raw)["layers"]
    payload = registry.blob(path, layer["digest"])
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))      # raises if it does not
    named = json.loads(payload)["critical"]
    assert named["image"]["docker-manifest-digest"] == digest
    assert named["identity"]["docker-reference"] == f"10.77.0.1:5000/rig/{SERVICE}"
    again = run(spec, "build", "--push", "--tag", "sig-1")   # nothing new: no key, no signing
    assert "built 0, tagged 0, present " in again.stdout and "signed" not in again.stdout, \
        again.stdout


def test_an_image_pushed_under_a_signed_tag_by_someone_else_is_refused_before_any_change(spec):
    """Someone with a registry token builds without the key and moves sig-1 to their image."""
    lab_yml = spec / "lab.yml"
    original = lab_yml.read_text()
    main = spec / "dockerfiles/services" / SERVICE / "app/main.py"
    code = main.read_text()
    try:
        lab_yml.write_text(original.replace("    key: .lab/signing/cosign.key\n", ""))
        # a change no other test builds: a new image, never a reuse of a signed one
        main.write_text(code.replace('"calm": (0.6, -0.7)', '"calm": (0.637, -0.7)'))
        run(spec, "build", "--push", "--tag", "sig-other")
    finally:
        lab_yml.write_text(original)
        main.write_text(code)
    registry, path = client(spec), f"rig/{SERVICE}"
    theirs = registry.copy_manifest(path, "sig-other", "sig-1")
    before = {h: containers(h) for h in ("mainpc", "pc2")}
    refused = run(spec, "rollout", "--tag", "sig-1", "--no-verify", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (f"10.77.0.1:5000/rig/{SERVICE}:sig-1 ({theirs[:19]}): no valid signature by key"
            in refused.stderr), refused.stderr
    assert "pre-flight failed: no host was changed" in refused.stderr
    assert {h: containers(h) for h in ("mainpc", "pc2")} == before
    # the same for a signature replaced by one made with a key not in public_keys
    stranger = ec.generate_private_key(ec.SECP256R1())
    from rig.supply import cosign

    assert cosign.sign(registry, path, f"10.77.0.1:5000/{path}", theirs, stranger)
    refused = run(spec, "rollout", "--tag", "sig-1", "--no-verify", check=False)
    assert refused.returncode == 1 and "no valid signature by key" in refused.stderr
    assert {h: containers(h) for h in ("mainpc", "pc2")} == before
    shown = run(spec, "images", "verify", "--tag", "sig-1", check=False)
    assert shown.returncode == 1 and "UNSIGNED" in shown.stdout
