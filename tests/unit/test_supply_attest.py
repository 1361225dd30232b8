"""Attestations (rig/supply/attest.py, provenance.py, sbom.py) and what a build and a rollout do
with them (rig/ops/signing.py), against the in-memory registry of test_supply_cosign.py. Every
envelope rig writes is checked again with plain `cryptography` (PAE built here by hand), so the
signer and the verifier cannot share a mistake."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.errors import RigError
from rig.supply import attest, provenance, sbom, simplesign
from rig.supply.keys import short_id

from .test_supply_cosign import DIGEST, OTHER, PATH, REPO, MemoryRegistry, key

COMMIT = "1a2b3c4d" + "0" * 32
TAG = "20261130-1a2b3c4d"
SPDX = {"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT",
        "packages": [{"name": "image", "SPDXID": "SPDXRef-Root"},
                     {"name": "apt", "SPDXID": "SPDXRef-a", "versionInfo": "3.0.4"},
                     {"name": "numpy", "SPDXID": "SPDXRef-n", "versionInfo": "2.1.0"}],
        "relationships": [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                           "relatedSpdxElement": "SPDXRef-Root"}]}


def build(target="model_ops_coordinator-mainpc", commit=COMMIT, source_hash="ab" * 32, **more):
    return provenance.Build(target=target, tag=TAG, commit=commit, clean=True,
                            source_hash=source_hash, context="dockerfiles/services/x",
                            context_digest="cd" * 32, dockerfile_digest="ef" * 32,
                            args={"MACHINE": "mainpc"}, bases={"reg/base:1": DIGEST},
                            builder="this machine", rig_version="0.1.0",
                            started="2026-11-30T10:00:00Z", finished="2026-11-30T10:01:00Z", **more)


def independent_envelopes(registry, public_key, digest) -> list[dict]:
    """The statements in the attestation manifest whose DSSE signature verifies, by plain
    cryptography: PAE is b"DSSEv1 <len(type)> <type> <len(payload)> <payload>"."""
    doc = json.loads(registry.tags[(PATH, "sha256-" + digest[7:] + ".att")])
    good = []
    for layer in doc["layers"]:
        envelope = json.loads(registry.blobs[layer["digest"]])
        payload = base64.b64decode(envelope["payload"])
        kind = envelope["payloadType"].encode()
        pae = b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" " + \
            str(len(payload)).encode() + b" " + payload
        try:
            public_key.verify(base64.b64decode(envelope["signatures"][0]["sig"]), pae,
                              ec.ECDSA(hashes.SHA256()))
        except Exception:  # noqa: BLE001
            continue
        good.append(json.loads(payload))
    return good


# -- provenance: the predicate, read back, fitted to an image --------------------------------------
def test_a_provenance_says_what_was_built_from_what_and_reads_back():
    predicate = provenance.predicate(build(reused_from="src-abc", source_url="https://example.org/ai"))
    assert predicate["buildDefinition"]["externalParameters"]["source"] == {"commit": COMMIT,
                                                                            "clean": True}
    assert {"uri": "oci:reg/base:1", "digest": {"sha256": DIGEST[7:]}, "name": "base"} in \
        predicate["buildDefinition"]["resolvedDependencies"]
    assert predicate["runDetails"]["builder"]["id"] == "urn:rig:builder:this machine"
    assert {"uri": f"git+https://example.org/ai@{COMMIT}", "digest": {"gitCommit": COMMIT},
            "name": "source"} in predicate["buildDefinition"]["resolvedDependencies"]
    assert provenance.summary(predicate) == provenance.Summary(
        target="model_ops_coordinator-mainpc", commit=COMMIT, clean=True,
        builder="urn:rig:builder:this machine", source_hash="ab" * 32, tag=TAG,
        reused_from="src-abc", finished="2026-11-30T10:01:00Z", commits=(COMMIT,))
    assert predicate["buildDefinition"]["internalParameters"]["reusedAt"] == [COMMIT]


@pytest.mark.parametrize("tag, commit", [
    ("20261130-1a2b3c4d", "1a2b3c4d"), ("20261130-1a2b3c4d-dirty", "1a2b3c4d"),
    ("v1.2", None), ("20261130-1A2B3C4D", None), ("2026113-1a2b3c4d", None),
    ("20261130-1a2b3c4d\n", None)])
def test_the_commit_a_tag_names(tag, commit):
    assert provenance.commit_of_tag(tag) == commit


def test_a_provenance_fits_only_its_own_target_and_the_commit_its_tag_names():
    found = provenance.summary(provenance.predicate(build()))
    assert provenance.problems(found, "model_ops_coordinator-mainpc", TAG) == []
    assert provenance.fits(found, "model_ops_coordinator-mainpc", TAG) is True
    assert provenance.fits(found, "model_ops_coordinator-pc2", TAG) is False
    assert provenance.problems(found, "model_ops_coordinator-pc2", TAG) == [
        "its provenance is of build target 'model_ops_coordinator-mainpc', not "
        "'model_ops_coordinator-pc2'"]
    assert provenance.problems(found, "model_ops_coordinator-mainpc", "20261130-99999999") == [
        "its provenance names commit 1a2b3c4d0000, not 99999999 as the tag says"]
    assert provenance.problems(found, "model_ops_coordinator-mainpc", "release-7") == []   # no sha
    # built from a folder that is not a git checkout: no commit, so no tag naming one fits
    unknown = provenance.summary(provenance.predicate(build(commit=None)))
    assert unknown.commit is None
    assert provenance.problems(unknown, "model_ops_coordinator-mainpc", "release-7") == []
    assert provenance.problems(unknown, "model_ops_coordinator-mainpc", TAG) == [
        "its provenance names commit none, not 1a2b3c4d as the tag says"]


def test_of_several_provenances_the_fitting_one_is_chosen_else_the_first_readable():
    """What pre-flight and `rig images verify` both decide on (provenance.judge)."""
    other = provenance.predicate(build(target="affective_processing_center"))
    mine = provenance.predicate(build())
    junk = {"buildDefinition": {"buildType": "elsewhere"}}
    chosen, misfit, unreadable = provenance.judge([junk, other, mine], "model_ops_coordinator-mainpc",
                                                  TAG)
    assert (chosen.target, misfit) == ("model_ops_coordinator-mainpc", [])
    assert unreadable == ["the provenance is not of rig's build type"]
    chosen, misfit, _ = provenance.judge([junk, other], "model_ops_coordinator-mainpc", TAG)
    assert chosen.target == "affective_processing_center" and misfit == [
        "its provenance is of build target 'affective_processing_center', not "
        "'model_ops_coordinator-mainpc'"]
    assert provenance.judge([junk], "x", TAG) == (None, [], [
        "the provenance is not of rig's build type"])


@pytest.mark.parametrize("path, value, error", [
    (("buildDefinition", "buildType"), "https://other", "not of rig's build type"),
    (("buildDefinition", "externalParameters", "source", "commit"), "abc",
     "commit is not a 40-hex git revision"),
    (("buildDefinition", "externalParameters", "source", "commit"), 7,
     "commit is not a 40-hex git revision"),
    (("buildDefinition", "externalParameters", "source"), [], "source is not a dict"),
    (("buildDefinition", "externalParameters", "source", "clean"), "yes",
     "source.clean is not a bool"),
    (("buildDefinition", "internalParameters", "sourceHash"), 7, "sourceHash is not a str"),
    (("runDetails", "builder", "id"), None, "builder.id is not a str"),
])
def test_a_provenance_with_a_wrong_field_is_refused_naming_it(path, value, error):
    predicate = provenance.predicate(build())
    node = predicate
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(RigError, match=error):
        provenance.summary(predicate)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_a_provenance_or_a_clear_error(doc):
    try:
        provenance.summary(doc)
    except RigError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["packages", "relationships", "SPDXID", "documentDescribes"]),
                       JSON, max_size=4))
def test_any_json_is_an_sbom_or_a_clear_error(doc):
    try:
        found = sbom.packages(doc)
    except RigError:
        return
    assert all(isinstance(name, str) and isinstance(version, str) for name, version in found)


def test_an_sbom_lists_its_packages_without_the_image_itself():
    assert sbom.packages(SPDX) == [("apt", "3.0.4"), ("numpy", "2.1.0")]
    assert sbom.packages({**SPDX, "relationships": 7}) == [("apt", "3.0.4"), ("image", ""),
                                                           ("numpy", "2.1.0")]
    with pytest.raises(RigError, match="not an SPDX document"):
        sbom.packages({"bomFormat": "CycloneDX"})


def test_syft_gets_the_registrys_credentials_in_its_environment_and_nothing_of_the_operators(
        monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", "/home/op/.docker")
    monkeypatch.setenv("SYFT_REGISTRY_INSECURE_SKIP_TLS_VERIFY", "true")
    registry = SimpleNamespace(host="10.77.0.1:5000", username="rig", password="s3cret",
                               ca_file="/lab/ca.crt")
    env = sbom.syft_env(registry, "/tmp/h")
    assert env["SYFT_REGISTRY_AUTH_USERNAME"] == "rig" and env["SYFT_REGISTRY_AUTH_PASSWORD"] == "s3cret"
    assert env["SYFT_REGISTRY_AUTH_AUTHORITY"] == "10.77.0.1:5000"
    assert env["SYFT_REGISTRY_CA_CERT"] == "/lab/ca.crt"
    assert env["DOCKER_CONFIG"] == "/tmp/h" and "SYFT_REGISTRY_INSECURE_SKIP_TLS_VERIFY" not in env
    assert env["SYFT_CHECK_FOR_APP_UPDATE"] == "false"
    assert env["SYFT_RELATIONSHIPS_PACKAGE_FILE_OWNERSHIP"] == "false"


def test_syft_is_run_with_no_secret_in_argv_and_its_failure_is_named(monkeypatch, tmp_path):
    ran = {}

    def fake_run(argv, **kw):
        ran["argv"], ran["env"] = argv, kw["env"]
        return SimpleNamespace(returncode=1, stdout=b"", stderr=b"line1\nGET ... 401 unauthorized\n")
    monkeypatch.setattr(sbom, "syft_binary", lambda: "/venv/bin/syft")
    monkeypatch.setattr(sbom.subprocess, "run", fake_run)
    registry = SimpleNamespace(host="reg:5000", username="rig", password="s3cret", ca_file=None)
    with pytest.raises(RigError) as caught:
        sbom.generate("reg:5000/rig/x", DIGEST, registry)
    assert ran["argv"] == ["/venv/bin/syft", "scan", f"registry:reg:5000/rig/x@{DIGEST}", "-o",
                           "spdx-json"]      # not --quiet: it would hide why syft failed
    assert "s3cret" not in " ".join(ran["argv"]) and ran["env"]["SYFT_REGISTRY_AUTH_PASSWORD"] == "s3cret"
    assert caught.value.lines[0].startswith(f"reg:5000/rig/x@{DIGEST[:19]}: syft failed (exit 1)")
    assert caught.value.lines[-1] == "  GET ... 401 unauthorized"


# -- attestations in the registry --------------------------------------------------------------
def test_an_attestation_is_added_once_verifies_independently_and_keeps_the_others():
    registry, signer = MemoryRegistry(), key()
    predicate = provenance.predicate(build())
    assert attest.attest(registry, PATH, REPO, DIGEST, signer, sbom.PREDICATE_TYPE, SPDX)
    assert attest.attest(registry, PATH, REPO, DIGEST, signer, provenance.PREDICATE_TYPE, predicate)
    assert not attest.attest(registry, PATH, REPO, DIGEST, signer, sbom.PREDICATE_TYPE, SPDX)
    assert registry.puts == [simplesign.att_tag(DIGEST)] * 2
    statements = independent_envelopes(registry, signer.public_key(), DIGEST)
    assert [s["predicateType"] for s in statements] == [provenance.PREDICATE_TYPE, sbom.PREDICATE_TYPE]
    assert all(s["_type"] == "https://in-toto.io/Statement/v1" and s["subject"] == [
        {"name": REPO, "digest": {"sha256": DIGEST[7:]}}] for s in statements)
    doc = json.loads(registry.tags[(PATH, simplesign.att_tag(DIGEST))])
    assert [layer["annotations"]["predicateType"] for layer in doc["layers"]] == [
        provenance.PREDICATE_TYPE, sbom.PREDICATE_TYPE]
    assert {layer["mediaType"] for layer in doc["layers"]} == {"application/vnd.dsse.envelope.v1+json"}
    found = attest.statements(registry, PATH, REPO, DIGEST, [signer.public_key()],
                              provenance.PREDICATE_TYPE)
    assert [a.predicate for a in found] == [predicate]


def test_a_statement_counts_only_for_its_image_its_type_and_a_trusted_key():
    registry, signer, stranger = MemoryRegistry(), key(), key()
    attest.attest(registry, PATH, REPO, DIGEST, signer, sbom.PREDICATE_TYPE, SPDX)
    trusted = [signer.public_key()]
    assert attest.statements(registry, PATH, REPO, DIGEST, [stranger.public_key()],
                             sbom.PREDICATE_TYPE) == []
    assert attest.statements(registry, PATH, REPO, DIGEST, trusted, provenance.PREDICATE_TYPE) == []
    assert attest.statements(registry, PATH, REPO + "x", DIGEST, trusted, sbom.PREDICATE_TYPE) == []
    # the same envelope copied under another digest's tag names the first digest: it does not count
    registry.tags[(PATH, simplesign.att_tag(OTHER))] = registry.tags[(PATH, simplesign.att_tag(DIGEST))]
    assert attest.statements(registry, PATH, REPO, OTHER, trusted, sbom.PREDICATE_TYPE) == []
    assert len(attest.statements(registry, PATH, REPO, DIGEST, trusted, sbom.PREDICATE_TYPE)) == 1


def test_a_changed_byte_in_an_envelope_does_not_verify():
    registry, signer = MemoryRegistry(), key()
    attest.attest(registry, PATH, REPO, DIGEST, signer, sbom.PREDICATE_TYPE, SPDX)
    layer = json.loads(registry.tags[(PATH, simplesign.att_tag(DIGEST))])["layers"][0]
    envelope = json.loads(registry.blobs[layer["digest"]])
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[payload.index(b"numpy")] = ord("N")
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    registry.blobs[layer["digest"]] = json.dumps(envelope).encode()
    assert attest.statements(registry, PATH, REPO, DIGEST, [signer.public_key()],
                             sbom.PREDICATE_TYPE) == []


def test_a_statement_whose_layer_says_one_type_and_body_another_does_not_count():
    registry, signer = MemoryRegistry(), key()
    attest.attest(registry, PATH, REPO, DIGEST, signer, sbom.PREDICATE_TYPE, SPDX)
    raw = registry.tags[(PATH, simplesign.att_tag(DIGEST))]
    registry.tags[(PATH, simplesign.att_tag(DIGEST))] = raw.replace(
        sbom.PREDICATE_TYPE.encode(), provenance.PREDICATE_TYPE.encode())
    assert attest.statements(registry, PATH, REPO, DIGEST, [signer.public_key()],
                             provenance.PREDICATE_TYPE) == []


def test_an_attestation_lost_to_a_racing_writer_is_an_error():
    registry, signer = MemoryRegistry(), key()
    put = registry.put_manifest

    def racing(path, tag, body, media_type):
        put(path, tag, body, media_type)
        registry.tags[(path, tag)] = b'{"schemaVersion":2,"layers":[]}'   # the other writer's
    registry.put_manifest = racing
    with pytest.raises(RigError, match="did not stay in the registry"):
        attest.attest(registry, PATH, REPO, DIGEST, signer, sbom.PREDICATE_TYPE, SPDX)


# -- what a rollout refuses ----------------------------------------------------------------------
def rollout_case(fleet, tmp_path, **rollout):
    from rig.supply.keys import public_pem

    signer = key()
    (tmp_path / "k.pub").write_bytes(public_pem(signer.public_key()))
    signing = fleet.build.signing.model_copy(update={"public_keys": [str(tmp_path / "k.pub")]})
    fleet = fleet.model_copy(update={
        "build": fleet.build.model_copy(update={"signing": signing}),
        "rollout": fleet.rollout.model_copy(update=rollout)})
    repo = fleet.registry.repository("model_ops_coordinator")
    return fleet, signer, repo, repo.split("/", 1)[1]


def test_a_rollout_refuses_a_signed_image_without_fitting_provenance_naming_why(fleet, tmp_path):
    from rig.commands.container import Release
    from rig.ops.signing import signature_problems
    from rig.supply import cosign

    fleet, signer, repo, path = rollout_case(fleet, tmp_path)
    registry = MemoryRegistry()
    keys = [signer.public_key()]
    for digest in (DIGEST, OTHER):
        cosign.sign(registry, path, repo, digest, signer)
    attest.attest(registry, path, repo, DIGEST, signer, provenance.PREDICATE_TYPE,
                  provenance.predicate(build()))    # mainpc's build of commit 1a2b3c4d

    def on(host, digest, tag=TAG):
        return {host: [Release("model_ops_coordinator", f"{tag}-{host}", repo, digest, "ph")]}
    assert signature_problems(fleet, registry, on("mainpc", DIGEST), keys) == []
    # the same signed image on pc2 is mainpc's build: another service variant's image
    assert signature_problems(fleet, registry, on("pc2", DIGEST), keys)[0] == (
        f"{repo}:{TAG}-pc2 ({DIGEST[:19]}): its provenance is of build target "
        "'model_ops_coordinator-mainpc', not 'model_ops_coordinator-pc2'")
    # mainpc's build under both machines' tags, pc2 first: pc2's line names pc2's tag, and
    # mainpc's (it fits) none
    both = {**on("pc2", DIGEST), **on("mainpc", DIGEST)}
    assert signature_problems(fleet, registry, both, keys)[:-1] == [
        f"{repo}:{TAG}-pc2 ({DIGEST[:19]}): its provenance is of build target "
        "'model_ops_coordinator-mainpc', not 'model_ops_coordinator-pc2'"]
    # the signed image moved under another commit's tag
    assert signature_problems(fleet, registry, on("mainpc", DIGEST, "20261201-99999999"), keys)[0] == (
        f"{repo}:20261201-99999999-mainpc ({DIGEST[:19]}): its provenance names commit "
        "1a2b3c4d0000, not 99999999 as the tag says")
    # unsigned: one line, for the signature (its provenance is not asked for)
    unsigned = "sha256:" + "77" * 32
    assert signature_problems(fleet, registry, on("mainpc", unsigned), keys)[:-1] == [
        f"{repo}:{TAG}-mainpc ({unsigned[:19]}): no valid signature by key "
        f"{short_id(keys[0])} (pushed by someone else, "
        "or never signed)"]
    assert signature_problems(fleet, registry, on("mainpc", OTHER), keys)[0] == (
        f"{repo}:{TAG}-mainpc ({OTHER[:19]}): no provenance signed by a trusted key (built by "
        "something other than rig, or its attestation failed)")
    # turned off explicitly: signatures still checked, provenance not
    relaxed, *_ = rollout_case(fleet, tmp_path, require_provenance=False)
    assert not relaxed.requires_provenance and relaxed.requires_signed
    assert signature_problems(relaxed, registry, on("mainpc", OTHER), keys) == []


def test_a_provenance_by_an_untrusted_key_does_not_count(fleet, tmp_path):
    from rig.commands.container import Release
    from rig.ops.signing import signature_problems
    from rig.supply import cosign

    fleet, signer, repo, path = rollout_case(fleet, tmp_path)
    registry = MemoryRegistry()
    cosign.sign(registry, path, repo, DIGEST, signer)
    attest.attest(registry, path, repo, DIGEST, key(), provenance.PREDICATE_TYPE,
                  provenance.predicate(build()))
    releases = {"mainpc": [Release("model_ops_coordinator", f"{TAG}-mainpc", repo, DIGEST, "ph")]}
    problems = signature_problems(fleet, registry, releases, [signer.public_key()])
    assert problems[0].endswith("no provenance signed by a trusted key (built by something other "
                                "than rig, or its attestation failed)")


def test_require_provenance_needs_signatures_checked(fleet, tmp_path):
    from rig.config.rules import check

    relaxed, *_ = rollout_case(fleet, tmp_path, require_signed=False, require_provenance=True)
    assert any(loc == ("rollout", "require_provenance") for loc, _ in check(relaxed))
    assert not relaxed.requires_provenance
    default, *_ = rollout_case(fleet, tmp_path)
    assert default.requires_provenance


# -- what a build attests ---------------------------------------------------------------------
def build_case(tmp_path):
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM x\n")
    images = {t: SimpleNamespace(target=t, ref=f"{REPO}:{t}", path=PATH, repository=REPO,
                                 context="ctx", args={"MACHINE": "mainpc"})
              for t in ("built", "reused", "stranger")}
    plan = SimpleNamespace(tag=TAG, build=["built"], reuse={"reused": "src-1", "stranger": "src-2"},
                           hashes={"built": "11" * 32, "reused": "22" * 32, "stranger": "33" * 32},
                           image=lambda t: images[t])
    rows = [{"image": f"{REPO}:built", "digest": DIGEST}, {"image": f"{REPO}:reused", "digest": OTHER},
            {"image": f"{REPO}:stranger", "digest": "sha256:" + "ef" * 32}]
    facts = {"commit": COMMIT, "clean": True, "builder": "this machine", "started": "s",
             "finished": "f", "bases": {"built": {"reg/base:1": DIGEST}}, "spec_dir": tmp_path,
             "source_url": "https://example.org/ai"}
    return plan, rows, facts


def test_a_build_attests_what_it_built_and_a_reuse_only_of_its_own_provenance(tmp_path, monkeypatch):
    from rig.ops.signing import attest_built

    plan, rows, facts = build_case(tmp_path)
    registry, signer, said, scanned = MemoryRegistry(), key(), [], []
    monkeypatch.setattr(sbom, "generate", lambda repo, digest, reg: scanned.append(digest) or SPDX)
    # the reused image was built and attested earlier (same sources, another commit)
    attest.attest(registry, PATH, REPO, OTHER, signer, provenance.PREDICATE_TYPE, provenance.predicate(
        build(target="reused", commit="9" * 40, source_hash="22" * 32)))
    with pytest.raises(RigError) as caught:     # "stranger" has no provenance to reuse
        attest_built(registry, plan, rows, {"built"}, facts, signer, said.append)
    assert caught.value.lines == [
        f"{REPO}:stranger: reused from src-2, which has no provenance of this key for the same "
        "sources: none written", "a rollout will refuse an image without provenance: `rig build "
        "--push --rebuild --tag TAG` builds and attests again"]
    assert scanned == [DIGEST]             # an SBOM for what was built; a reuse keeps its own
    trusted = [signer.public_key()]
    built = provenance.summary(attest.statements(registry, PATH, REPO, DIGEST, trusted,
                                                 provenance.PREDICATE_TYPE)[0].predicate)
    assert (built.target, built.commit, built.source_hash, built.reused_from) == (
        "built", COMMIT, "11" * 32, None)
    written = attest.statements(registry, PATH, REPO, DIGEST, trusted, provenance.PREDICATE_TYPE)[0]
    assert written.predicate["buildDefinition"]["resolvedDependencies"][0] == {
        "uri": f"git+https://example.org/ai@{COMMIT}", "digest": {"gitCommit": COMMIT}, "name": "source"}
    reused = [provenance.summary(a.predicate) for a in attest.statements(
        registry, PATH, REPO, OTHER, trusted, provenance.PREDICATE_TYPE)]
    assert [(r.commit, r.reused_from, r.commits) for r in reused] == [
        (COMMIT, "src-1", (COMMIT,)), ("9" * 40, None, ("9" * 40,))]
    assert said[-1] == "attested 2 provenance(s), 1 SBOM(s)"
    del plan.reuse["stranger"]
    said.clear()      # again: nothing new
    assert attest_built(registry, plan, rows, {"built"}, facts, signer, said.append) == (0, 0)
    assert scanned == [DIGEST]


def test_an_image_reused_at_many_commits_keeps_one_reuse_statement_and_fits_every_tag(tmp_path,
                                                                                    monkeypatch):
    """Re-tagged at every commit (its sources never change): one reuse statement lists every
    commit, replacing the last one, so the build's own provenance and SBOM stay in the
    manifest and an old tag still fits (a rollback to it is not refused)."""
    from rig.ops.signing import attest_built

    plan, rows, facts = build_case(tmp_path)
    plan.build, plan.reuse = [], {"reused": "src-1"}
    registry, signer = MemoryRegistry(), key()
    attest.attest(registry, PATH, REPO, OTHER, signer, sbom.PREDICATE_TYPE, SPDX)
    attest.attest(registry, PATH, REPO, OTHER, signer, provenance.PREDICATE_TYPE, provenance.predicate(
        build(target="reused", commit="9" * 40, source_hash="22" * 32)))
    commits = [f"{n:08x}" + "a" * 32 for n in range(40)]
    for commit in commits:
        attest_built(registry, plan, rows, set(), {**facts, "commit": commit}, signer, print)
    layers = json.loads(registry.tags[(PATH, simplesign.att_tag(OTHER))])["layers"]
    assert [x["annotations"]["predicateType"] for x in layers] == [
        provenance.PREDICATE_TYPE, provenance.PREDICATE_TYPE, sbom.PREDICATE_TYPE]
    found = [provenance.summary(a.predicate) for a in attest.statements(
        registry, PATH, REPO, OTHER, [signer.public_key()], provenance.PREDICATE_TYPE)]
    assert set(found[0].commits) == set(commits)
    for commit in (commits[0], commits[-1], "9" * 40):
        assert any(provenance.fits(f, "reused", f"20261130-{commit[:8]}") for f in found)
    assert attest.statements(registry, PATH, REPO, OTHER, [signer.public_key()], sbom.PREDICATE_TYPE)


def test_a_dirty_build_under_a_clean_commit_tag_does_not_fit():
    dirty = provenance.summary(provenance.predicate(
        provenance.Build(**{**build().__dict__, "clean": False})))
    assert provenance.problems(dirty, "model_ops_coordinator-mainpc", TAG + "-dirty") == []
    assert provenance.problems(dirty, "model_ops_coordinator-mainpc", TAG) == [
        "its provenance says the tree had uncommitted changes; the tag (no -dirty) says a clean "
        "build of that commit"]
    assert provenance.problems(dirty, "model_ops_coordinator-mainpc", "release-7") == []


def test_a_reuse_whose_original_has_other_sources_gets_no_provenance(tmp_path, monkeypatch):
    from rig.ops.signing import attest_built

    plan, rows, facts = build_case(tmp_path)
    registry, signer = MemoryRegistry(), key()
    monkeypatch.setattr(sbom, "generate", lambda *a: SPDX)
    attest.attest(registry, PATH, REPO, OTHER, signer, provenance.PREDICATE_TYPE, provenance.predicate(
        build(target="reused", source_hash="99" * 32)))    # someone moved src-1 to another image
    with pytest.raises(RigError, match="reused: reused from src-1, which has no provenance of this"):
        attest_built(registry, plan, rows, {"built"}, facts, signer, lambda line: None)
    assert len(attest.statements(registry, PATH, REPO, OTHER, [signer.public_key()],
                                 provenance.PREDICATE_TYPE)) == 1


def test_a_failed_sbom_is_named_after_the_others_are_attested(tmp_path, monkeypatch):
    from rig.ops.signing import attest_built

    plan, rows, facts = build_case(tmp_path)
    plan.reuse = {}

    def failing(repo, digest, reg):
        raise RigError(f"{repo}@{digest[:19]}: syft failed (exit 1) after 3 s")
    monkeypatch.setattr(sbom, "generate", failing)
    registry, signer = MemoryRegistry(), key()
    with pytest.raises(RigError) as caught:
        attest_built(registry, plan, rows, {"built"}, facts, signer, lambda line: None)
    assert caught.value.lines[0] == f"{REPO}:built: not attested: {REPO}@{DIGEST[:19]}: syft failed " \
        "(exit 1) after 3 s"
    assert attest.statements(registry, PATH, REPO, DIGEST, [signer.public_key()],
                             provenance.PREDICATE_TYPE)      # the provenance went in first


def test_the_base_images_digests_come_from_the_build_hosts_engine():
    from rig.build import base_digests

    class Executor:
        def run(self, command):
            assert command == "docker image inspect -f '{{json .RepoDigests}}' reg:5000/rig/base:trixie " \
                "nvidia/cuda:12.1"
            return True, (f'["reg:5000/rig/other@{OTHER}","reg:5000/rig/base@{DIGEST}"]\n'
                          f'["nvidia/cuda@{OTHER}"]\n'), []
    assert base_digests(Executor(), ["reg:5000/rig/base:trixie", "nvidia/cuda:12.1"]) == {
        "reg:5000/rig/base:trixie": DIGEST, "nvidia/cuda:12.1": OTHER}
    assert base_digests(Executor(), []) == {}


# -- untrusted statements and registries that fail --------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["_type", "subject", "predicateType", "predicate"]), JSON,
                       max_size=4),
       st.lists(st.dictionaries(st.sampled_from(["name", "digest"]), JSON | st.just(REPO)), max_size=3))
def test_any_statement_is_about_the_image_or_a_clear_error(doc, subjects):
    for candidate in (doc, {**doc, "_type": "https://in-toto.io/Statement/v1",
                            "predicateType": sbom.PREDICATE_TYPE, "subject": subjects}):
        try:
            attest.statement_about(json.dumps(candidate).encode(), REPO, DIGEST, sbom.PREDICATE_TYPE)
        except RigError:
            pass


@pytest.mark.parametrize("subject", [7, "x", [{"name": REPO, "digest": "sha256:" + "ab" * 32}],
                                     [{"name": REPO, "digest": {"sha256": "cd" * 32}}]])
def test_a_statement_with_a_wrong_subject_is_refused(subject):
    body = {"_type": "https://in-toto.io/Statement/v1", "predicateType": sbom.PREDICATE_TYPE,
            "subject": subject, "predicate": SPDX}
    with pytest.raises(RigError, match="is not about"):
        attest.statement_about(json.dumps(body).encode(), REPO, DIGEST, sbom.PREDICATE_TYPE)
    right = {**body, "subject": [{"name": REPO, "digest": {"sha256": DIGEST[7:]}}]}
    assert attest.statement_about(json.dumps(right).encode(), REPO, DIGEST, sbom.PREDICATE_TYPE) == SPDX
    with pytest.raises(RigError, match="not an in-toto Statement v1"):
        attest.statement_about(json.dumps({**right, "_type": "https://in-toto.io/Statement/v0.1"})
                               .encode(), REPO, DIGEST, sbom.PREDICATE_TYPE)


def test_an_envelope_of_another_payload_type_does_not_count_though_its_signature_verifies():
    from rig.supply import cosign, dsse

    registry, signer = MemoryRegistry(), key()
    body = json.dumps(dsse.statement(REPO, DIGEST, sbom.PREDICATE_TYPE, SPDX)).encode()
    envelope = json.dumps(dsse.envelope("application/json", body, signer)).encode()
    cosign.add_layer(registry, PATH, simplesign.att_tag(DIGEST), None, envelope,
                     dsse.ENVELOPE_MEDIA_TYPE, {attest.PREDICATE_ANNOTATION: sbom.PREDICATE_TYPE}, 8)
    assert attest.statements(registry, PATH, REPO, DIGEST, [signer.public_key()],
                             sbom.PREDICATE_TYPE) == []


class Unreadable(MemoryRegistry):
    """A registry whose attestation (or signature) manifests cannot be read."""

    def __init__(self, suffix):
        super().__init__()
        self.suffix = suffix

    def manifest(self, path, reference):
        if reference.endswith(self.suffix):
            raise RigError("GET manifests -> 500 Internal Server Error (5 tries)")
        return super().manifest(path, reference)


@pytest.mark.parametrize("suffix, said", [
    (".sig", "its signatures could not be read: GET manifests -> 500 Internal Server Error (5 tries)"),
    (".att", "its provenance could not be read: GET manifests -> 500 Internal Server Error (5 tries)")])
def test_a_registry_that_cannot_say_is_a_refusal_naming_what_could_not_be_read(fleet, tmp_path, suffix,
                                                                               said):
    from rig.commands.container import Release
    from rig.ops.signing import signature_problems
    from rig.supply import cosign

    fleet, signer, repo, path = rollout_case(fleet, tmp_path)
    registry = Unreadable(suffix)
    if suffix == ".att":
        cosign.sign(registry, path, repo, DIGEST, signer)
    releases = {"mainpc": [Release("model_ops_coordinator", f"{TAG}-mainpc", repo, DIGEST, "ph")]}
    assert signature_problems(fleet, registry, releases, [signer.public_key()])[0] == \
        f"{repo}:{TAG}-mainpc ({DIGEST[:19]}): {said}"


def test_a_build_host_that_does_not_say_what_it_pushed_leaves_that_image_unsigned():
    from rig.ops.signing import sign_built

    registry, signer = MemoryRegistry(), key()
    image = SimpleNamespace(target="built", ref=f"{REPO}:built", path=PATH, repository=REPO)
    plan = SimpleNamespace(build=["built"], reuse={}, image=lambda t: image)
    with pytest.raises(RigError) as caught:
        sign_built(registry, plan, [{"image": image.ref, "digest": DIGEST}], {}, signer, print)
    assert caught.value.lines[0] == f"{REPO}:built: the build host did not say which digest it " \
        "pushed; not signed"
    assert registry.puts == []


def test_a_build_says_each_sbom_and_what_it_attested(tmp_path, monkeypatch):
    from rig.ops.signing import attest_built

    plan, rows, facts = build_case(tmp_path)
    plan.reuse = {}
    monkeypatch.setattr(sbom, "generate", lambda *a: SPDX)
    registry, signer, said = MemoryRegistry(), key(), []
    attest_built(registry, plan, rows, {"built"}, facts, signer, said.append, sbom=False)
    assert said == ["attested 1 provenance(s), 0 SBOM(s)"]
    said.clear()
    attest_built(registry, plan, rows, {"built"}, facts, signer, said.append)
    assert said[0].startswith(f"  sbom {REPO}:built: 2 packages (syft, ") and said[1] == \
        "attested 0 provenance(s), 1 SBOM(s)"


def test_an_image_two_hosts_run_is_named_once(fleet, tmp_path):
    from rig.commands.container import Release
    from rig.ops.signing import signature_problems
    from rig.supply import cosign

    fleet, signer, _, _ = rollout_case(fleet, tmp_path)
    repo = fleet.registry.repository("real_time_audio_pipeline")     # one image for both hosts
    registry = MemoryRegistry()
    cosign.sign(registry, repo.split("/", 1)[1], repo, DIGEST, signer)
    release = Release("real_time_audio_pipeline", TAG, repo, DIGEST, "ph")
    problems = signature_problems(fleet, registry, {"mainpc": [release], "pc2": [release]},
                                  [signer.public_key()])
    assert problems[:-1] == [f"{repo}:{TAG} ({DIGEST[:19]}): no provenance signed by a trusted key "
                             "(built by something other than rig, or its attestation failed)"]


def test_machine_picks_a_per_machine_services_image_and_changes_nothing_for_others(fleet, tmp_path):
    from rig.ops.images import _one_image

    from .fakes import requiring_signatures

    job = SimpleNamespace(fleet=requiring_signatures(fleet, tmp_path))
    registry = SimpleNamespace(manifest_digest=lambda path, tag: DIGEST)
    image, digest, _ = _one_image(job, registry, "affective_processing_center", TAG, "mainpc")
    assert (image.tag, digest) == (TAG, DIGEST)
    image, _, _ = _one_image(job, registry, "model_ops_coordinator", TAG, "pc2")
    assert image.tag == f"{TAG}-pc2"
    with pytest.raises(RigError, match="pick one with --machine"):
        _one_image(job, registry, "model_ops_coordinator", TAG, None)
    with pytest.raises(RigError, match="no image for machine 'gpu9'"):
        _one_image(job, registry, "model_ops_coordinator", TAG, "gpu9")
