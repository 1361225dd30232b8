"""Signatures in the registry (rig/supply/cosign.py) against an in-memory registry that keeps
manifests and blobs by digest as a real one does: a signature is added, never overwrites
another, is not added twice, and counts only for the repository and digest it names. Every
signature rig writes is checked again with plain `cryptography`, payload bytes from the registry
and signature from the annotation, so signer and verifier cannot share a mistake."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from rig.errors import RigError
from rig.supply import cosign, simplesign

REPO = "10.77.0.1:5000/rig/model_ops_coordinator"
PATH = "rig/model_ops_coordinator"
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


class MemoryRegistry:
    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.tags: dict[tuple[str, str], bytes] = {}
        self.puts: list[str] = []

    def manifest(self, path, reference):
        raw = self.tags.get((path, reference))
        return None if raw is None else (raw, cosign.MANIFEST_MEDIA_TYPE)

    def blob(self, path, digest):
        return self.blobs[digest]

    def push_blob(self, path, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def put_manifest(self, path, tag, body, media_type):
        assert media_type == cosign.MANIFEST_MEDIA_TYPE
        self.puts.append(tag)
        self.tags[(path, tag)] = body
        return "sha256:" + hashlib.sha256(body).hexdigest()


def key():
    return ec.generate_private_key(ec.SECP256R1())


def independent_check(registry, public_key, digest) -> int:
    """How many layers of the signature manifest verify, by a few lines of plain
    cryptography (no rig code): payload bytes from the registry, signature from the layer."""
    doc = json.loads(registry.tags[(PATH, "sha256-" + digest[7:] + ".sig")])
    good = 0
    for layer in doc["layers"]:
        data = registry.blobs.get(layer["digest"])
        if data is None:
            continue
        signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
        try:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except Exception:  # noqa: BLE001
            continue
        named = json.loads(data)["critical"]
        good += named["image"]["docker-manifest-digest"] == digest and \
            named["identity"]["docker-reference"] == REPO
    return good


def test_a_signature_is_added_once_and_verifies_independently():
    registry, signer = MemoryRegistry(), key()
    assert cosign.sign(registry, PATH, REPO, DIGEST, signer) is True
    assert registry.puts == ["sha256-" + "ab" * 32 + ".sig"]
    assert independent_check(registry, signer.public_key(), DIGEST) == 1
    assert cosign.sign(registry, PATH, REPO, DIGEST, signer) is False     # already signed
    assert registry.puts == ["sha256-" + "ab" * 32 + ".sig"]
    assert cosign.signers(registry, PATH, REPO, DIGEST, [signer.public_key()]) == [
        signer.public_key()]
    doc = json.loads(registry.tags[(PATH, simplesign.sig_tag(DIGEST))])
    assert doc["mediaType"] == cosign.MANIFEST_MEDIA_TYPE and doc["schemaVersion"] == 2
    assert doc["layers"][0]["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    config = json.loads(registry.blobs[doc["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [doc["layers"][0]["digest"]]


def test_a_second_key_adds_a_layer_and_keeps_the_first():
    registry, first, second = MemoryRegistry(), key(), key()
    cosign.sign(registry, PATH, REPO, DIGEST, first)
    cosign.sign(registry, PATH, REPO, DIGEST, second)
    assert independent_check(registry, first.public_key(), DIGEST) == 1
    assert independent_check(registry, second.public_key(), DIGEST) == 1
    both = [first.public_key(), second.public_key()]
    found = cosign.signers(registry, PATH, REPO, DIGEST, both)
    assert len(found) == 2 and all(k in found for k in both)


def test_only_a_signature_naming_this_repository_and_this_digest_counts():
    registry, signer = MemoryRegistry(), key()
    keys = [signer.public_key()]
    assert cosign.signers(registry, PATH, REPO, DIGEST, keys) == []           # none at all
    cosign.sign(registry, PATH, REPO, OTHER, signer)
    # someone copies OTHER's valid signature manifest under DIGEST's tag
    registry.tags[(PATH, simplesign.sig_tag(DIGEST))] = registry.tags[(PATH, simplesign.sig_tag(OTHER))]
    assert cosign.signers(registry, PATH, REPO, DIGEST, keys) == []
    cosign.sign(registry, "rig/other", "10.77.0.1:5000/rig/other", DIGEST, signer)
    registry.tags[(PATH, simplesign.sig_tag(DIGEST))] = registry.tags[("rig/other",
                                                                       simplesign.sig_tag(DIGEST))]
    assert cosign.signers(registry, PATH, REPO, DIGEST, keys) == []           # another service's
    assert cosign.signers(registry, PATH, REPO, DIGEST, [key().public_key()]) == []


def test_a_changed_byte_in_the_payload_or_the_signature_does_not_verify():
    registry, signer = MemoryRegistry(), key()
    cosign.sign(registry, PATH, REPO, DIGEST, signer)
    doc = json.loads(registry.tags[(PATH, simplesign.sig_tag(DIGEST))])
    layer = doc["layers"][0]
    data = registry.blobs[layer["digest"]]
    registry.blobs[layer["digest"]] = data.replace(b"rig/", b"rjg/")
    assert cosign.signers(registry, PATH, REPO, DIGEST, [signer.public_key()]) == []
    registry.blobs[layer["digest"]] = data
    raw = base64.b64decode(layer["annotations"][simplesign.ANNOTATION])
    layer["annotations"][simplesign.ANNOTATION] = base64.b64encode(
        raw[:-1] + bytes([raw[-1] ^ 1])).decode()
    registry.tags[(PATH, simplesign.sig_tag(DIGEST))] = json.dumps(doc).encode()
    assert cosign.signers(registry, PATH, REPO, DIGEST, [signer.public_key()]) == []


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"layers": "x"}'])
def test_a_signature_manifest_that_is_not_one_is_a_clear_error(raw):
    registry = MemoryRegistry()
    registry.tags[(PATH, simplesign.sig_tag(DIGEST))] = raw
    with pytest.raises(RigError, match="signature manifest"):
        cosign.signers(registry, PATH, REPO, DIGEST, [key().public_key()])


# -- rig/ops/signing.py: what a build signs, what a rollout refuses ------------------------------
def test_a_rollout_names_each_image_without_a_trusted_signature_once(fleet):
    from rig.commands.container import Release
    from rig.ops.signing import signature_problems
    from rig.supply import keys

    repo = fleet.registry.repository("model_ops_coordinator")   # the spec's registry
    path = repo.split("/", 1)[1]

    def release_of(digest, tag="T1"):
        return Release("model_ops_coordinator", tag, repo, digest, "ph")
    registry, trusted, stranger = MemoryRegistry(), key(), key()
    cosign.sign(registry, path, repo, DIGEST, trusted)
    cosign.sign(registry, path, repo, OTHER, stranger)
    releases = {"mainpc": [release_of(DIGEST), release_of(OTHER, "T2")],
                "pc2": [release_of(OTHER, "T2")]}
    problems = signature_problems(fleet, registry, releases, [trusted.public_key()])
    assert problems == [
        f"{repo}:T2 ({OTHER[:19]}): no valid signature by key "
        f"{keys.short_id(trusted.public_key())} (pushed by someone else, or never signed)",
        "`rig images verify --tag TAG` shows what is signed and attested; `rig images sign --tag "
        "TAG` signs the images at TAG once you trust them; `rig build --push --rebuild --tag TAG` "
        "builds, signs and attests them anew"]
    assert signature_problems(fleet, registry, {"mainpc": [release_of(DIGEST)]},
                              [trusted.public_key()]) == []


def test_a_rollouts_images_are_checked_side_by_side_not_one_after_another(fleet):
    """Each image's signature look-up waits until every image's has begun: one after another,
    the first would wait for ever (here: 5 s, then the check fails)."""
    import gevent.event

    from rig.commands.container import Release
    from rig.ops.signing import signature_problems

    repo = fleet.registry.repository("model_ops_coordinator")
    path = repo.split("/", 1)[1]
    digests = [DIGEST, OTHER, "sha256:" + "ef" * 32]
    registry, trusted = MemoryRegistry(), key()
    for digest in digests:
        cosign.sign(registry, path, repo, digest, trusted)
    begun, all_begun, waited = set(), gevent.event.Event(), []
    plain = registry.manifest

    def manifest(p, reference):
        begun.add(reference)
        if len(begun) == len(digests):
            all_begun.set()
        waited.append(all_begun.wait(timeout=5))
        return plain(p, reference)
    registry.manifest = manifest
    releases = {"mainpc": [Release("model_ops_coordinator", "T1", repo, d, "ph") for d in digests]}
    assert signature_problems(fleet, registry, releases, [trusted.public_key()]) == []
    assert waited == [True] * len(digests)


def test_a_build_signs_what_it_pushed_or_tagged_and_leaves_what_was_there(fleet):
    from types import SimpleNamespace

    from rig.ops.signing import sign_pushed

    registry, signer, said = MemoryRegistry(), key(), []
    images = [SimpleNamespace(target=t, ref=f"{REPO}:{t}", path=PATH, repository=REPO)
              for t in ("built", "reused", "present")]
    rows = [{"image": f"{REPO}:built", "digest": DIGEST}, {"image": f"{REPO}:reused",
                                                          "digest": OTHER},
            {"image": f"{REPO}:present", "digest": "sha256:" + "ef" * 32}]
    assert sign_pushed(registry, images[:2], rows, signer, said.append) == (2, 0)
    assert sorted(registry.puts) == sorted([simplesign.sig_tag(DIGEST), simplesign.sig_tag(OTHER)])
    assert sign_pushed(registry, images[:1], rows, signer, said.append) == (0, 1)
    assert said == ["signed 2 image(s)", "signed 0 image(s), 1 already signed by this key"]


def test_an_encrypted_key_without_its_password_stops_the_build_naming_the_variable(fleet, tmp_path,
                                                                                    monkeypatch):
    from rig.ops.signing import signing_key
    from rig.supply.keys import generate_encrypted

    private, _ = generate_encrypted(b"correct horse")
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "cosign.key").write_bytes(private)
    signing = fleet.build.signing.model_copy(update={"key": "k/cosign.key",
                                                     "password_env": "RIG_TEST_PW"})
    fleet = fleet.model_copy(update={"build": fleet.build.model_copy(update={"signing": signing})})
    fleet._base_dir = tmp_path        # the spec's folder: a scratch one, never the checkout
    monkeypatch.delenv("RIG_TEST_PW", raising=False)
    with pytest.raises(RigError, match="its password is not given: RIG_TEST_PW is not set"):
        signing_key(fleet)
    (tmp_path / "k" / "pw").write_text("correct horse\n")
    (tmp_path / "k" / "pw").chmod(0o644)
    with_file = fleet.model_copy(update={"build": fleet.build.model_copy(update={
        "signing": signing.model_copy(update={"password_file": "k/pw"})})})
    with_file._base_dir = tmp_path
    with pytest.raises(RigError, match="readable by others"):
        signing_key(with_file)
    (tmp_path / "k" / "pw").chmod(0o600)
    assert signing_key(with_file).curve.name == "secp256r1"       # the file, the variable unset
    monkeypatch.setenv("RIG_TEST_PW", "wrong")
    with pytest.raises(RigError, match="wrong password"):
        signing_key(fleet)
    monkeypatch.setenv("RIG_TEST_PW", "correct horse")
    assert signing_key(fleet).curve.name == "secp256r1"


# -- rig keys generate, as an operator runs it -----------------------------------------------------
def test_keys_generate_writes_a_cosign_pair_from_the_named_variable_and_replaces_nothing(tmp_path):
    import os
    import stat
    import subprocess
    import sys
    from pathlib import Path

    from rig.supply.keys import is_encrypted, load_private_key, load_public_key

    rig = Path(sys.executable).with_name("rig")
    env = {**os.environ, "MY_PW": "s3cret horse"}
    done = subprocess.run([rig, "keys", "generate", "--out", tmp_path / "k", "--password-env",
                           "MY_PW"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    private, public = tmp_path / "k" / "cosign.key", tmp_path / "k" / "cosign.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and is_encrypted(private)
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    assert load_private_key(private, b"s3cret horse").public_key() == load_public_key(public)
    assert "s3cret" not in done.stdout + done.stderr
    again = subprocess.run([rig, "keys", "generate", "--out", tmp_path / "k", "--password-env",
                            "MY_PW"], capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 1 and "exists: not replaced" in again.stderr
    unset = subprocess.run([rig, "keys", "generate", "--out", tmp_path / "j"], capture_output=True,
                           text=True, env={k: v for k, v in os.environ.items()
                                           if k != "RIG_SIGNING_PASSWORD"}, timeout=60)
    assert unset.returncode == 1 and "RIG_SIGNING_PASSWORD is not set" in unset.stderr
    assert not (tmp_path / "j" / "cosign.key").exists()


def test_signatures_are_required_by_default_with_public_keys_and_only_where_keys_exist(fleet):
    from rig.config import rules

    def with_(require=None, keys=()):
        signing = fleet.build.signing.model_copy(update={"public_keys": list(keys)})
        return fleet.model_copy(update={
            "build": fleet.build.model_copy(update={"signing": signing}),
            "rollout": fleet.rollout.model_copy(update={"require_signed": require})})
    assert not with_().requires_signed
    assert with_(keys=["cosign.pub"]).requires_signed
    assert not with_(False, ["cosign.pub"]).requires_signed
    assert (("rollout", "require_signed"), "require_signed is on but build.signing.public_keys "
            "lists no key to check signatures with") in rules.check(with_(True))
    assert not [p for p in rules.check(with_(True, ["cosign.pub"])) if p[0][0] == "rollout"]


def test_junk_layers_neither_crash_signing_nor_hide_the_new_signature():
    registry, signer = MemoryRegistry(), key()
    junk = [{"mediaType": simplesign.MEDIA_TYPE, "size": 10, "digest": "sha256:" + "0" * 64,
             "annotations": {simplesign.ANNOTATION: "AAAA"}}] * cosign.MAX_SIGNATURES
    junk += ["a string", {"mediaType": simplesign.MEDIA_TYPE},
             {"mediaType": simplesign.MEDIA_TYPE, "size": 5, "digest": "../../other/x",
              "annotations": {simplesign.ANNOTATION: "AAAA"}}]
    registry.tags[(PATH, simplesign.sig_tag(DIGEST))] = json.dumps({"layers": junk}).encode()
    registry.blob = lambda path, digest: (registry.blobs[digest] if digest in registry.blobs
                                          else (_ for _ in ()).throw(RigError("no such blob")))
    assert cosign.sign(registry, PATH, REPO, DIGEST, signer) is True
    assert cosign.signers(registry, PATH, REPO, DIGEST, [signer.public_key()]) == [
        signer.public_key()]
    doc = json.loads(registry.tags[(PATH, simplesign.sig_tag(DIGEST))])
    assert len(doc["layers"]) == cosign.MAX_SIGNATURES and independent_check(
        registry, signer.public_key(), DIGEST) == 1


def test_a_signature_overwritten_by_a_racing_signer_is_an_error_not_a_silent_loss():
    registry, ours, theirs = MemoryRegistry(), key(), key()
    put = registry.put_manifest

    def racing(path, tag, body, media_type):
        put(path, tag, body, media_type)
        registry.put_manifest = put                     # the other signer writes right after
        cosign.sign(registry, PATH, REPO, DIGEST, theirs)
        registry.tags[(path, tag)] = registry.tags[(path, tag)]
        doc = json.loads(registry.tags[(path, tag)])
        doc["layers"] = doc["layers"][:1]               # ... from what it read before ours
        registry.tags[(path, tag)] = json.dumps(doc).encode()
    registry.put_manifest = racing
    with pytest.raises(RigError, match="the signature did not stay in the registry"):
        cosign.sign(registry, PATH, REPO, DIGEST, ours)


def test_key_files_and_password_files_are_private_regular_files(fleet, tmp_path, monkeypatch):
    import os

    from cryptography.hazmat.primitives import serialization

    from rig.ops.signing import signing_key
    from rig.supply.keys import generate_encrypted

    plain = key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (tmp_path / "plain.key").write_bytes(plain)
    (tmp_path / "plain.key").chmod(0o644)

    def spec(**signing):
        copy = fleet.model_copy(update={"build": fleet.build.model_copy(update={
            "signing": fleet.build.signing.model_copy(update=signing)})})
        copy._base_dir = tmp_path
        return copy
    with pytest.raises(RigError, match="unencrypted private key readable by others"):
        signing_key(spec(key="plain.key"))
    (tmp_path / "plain.key").chmod(0o600)
    assert signing_key(spec(key="plain.key")) is not None
    private, _ = generate_encrypted(b"pw ")                 # a trailing space is the password's
    (tmp_path / "enc.key").write_bytes(private)
    (tmp_path / "pw").write_text("pw \n")
    (tmp_path / "pw").chmod(0o600)
    monkeypatch.delenv("RIG_SIGNING_PASSWORD", raising=False)
    assert signing_key(spec(key="enc.key", password_file="pw")) is not None
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(RigError, match="not a regular file"):
        signing_key(spec(key="enc.key", password_file="fifo"))


def test_keys_generate_never_writes_through_a_link(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    rig = Path(sys.executable).with_name("rig")
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "cosign.pub").symlink_to(tmp_path / "elsewhere")
    done = subprocess.run([rig, "keys", "generate", "--out", tmp_path / "k"], capture_output=True,
                          text=True, env={**os.environ, "RIG_SIGNING_PASSWORD": "x"}, timeout=60)
    assert done.returncode == 1 and "exists: not replaced" in done.stderr
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "k" / "cosign.key").exists()


def test_a_build_signs_what_its_engine_pushed_never_what_the_registry_says_or_a_reuse(fleet):
    from types import SimpleNamespace

    from rig.ops.signing import sign_built

    registry, signer, said = MemoryRegistry(), key(), []
    images = {t: SimpleNamespace(target=t, ref=f"{REPO}:{t}", path=PATH, repository=REPO)
              for t in ("built", "moved", "reused")}
    plan = SimpleNamespace(build=["built", "moved"], reuse={"reused": "src-1"},
                           image=lambda t: images[t])
    rows = [{"image": f"{REPO}:built", "digest": DIGEST},
            {"image": f"{REPO}:moved", "digest": OTHER},           # someone moved the tag
            {"image": f"{REPO}:reused", "digest": "sha256:" + "ef" * 32}]
    with pytest.raises(RigError) as caught:
        sign_built(registry, plan, rows, {"built": {DIGEST}, "moved": {"sha256:" + "12" * 32}},
                   signer, said.append)
    assert caught.value.lines == [
        f"{REPO}:moved: the registry holds {OTHER[:19]}, not what this build pushed "
        "(sha256:121212121212); not signed", "a rollout will refuse these images until they are "
        "signed"]
    assert registry.puts == [simplesign.sig_tag(DIGEST)]           # only what it pushed
    assert said == ["signed 1 image(s)",
                    f"{REPO}:reused: reused from src-1, which this key never signed: left "
                    "unsigned (`rig build --push --rebuild` builds and signs it)"]


def test_the_pushed_digests_come_from_the_build_hosts_engine():
    from types import SimpleNamespace

    from rig.build import pushed_digests
    from rig.commands.bake import pushed_digests_command

    a = SimpleNamespace(target="a", ref=f"{REPO}:T-mainpc", repository=REPO)
    a2 = SimpleNamespace(target="a2", ref=f"{REPO}:T-pc2", repository=REPO)   # same repository
    b = SimpleNamespace(target="b", ref="reg/other:T", repository="reg/other")
    ran = []

    class Executor:
        def run(self, command):
            ran.append(command)
            return True, (f'["{REPO}@{DIGEST}"]\n["{REPO}@{OTHER}"]\n'
                          f'["reg/elsewhere@{DIGEST}"]\n'), []
    assert pushed_digests(Executor(), [a, a2, b]) == {"a": {DIGEST}, "a2": {OTHER}}  # b: unknown
    assert ran == [pushed_digests_command([a.ref, a2.ref, b.ref])]
    assert ran[0] == ("docker image inspect -f '{{json .RepoDigests}}' "
                      f"{REPO}:T-mainpc {REPO}:T-pc2 reg/other:T")
