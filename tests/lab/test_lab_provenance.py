"""Provenance and SBOMs on the real lab, from a spec that is a git checkout (as an operator's is):
`rig build --push` attests each image it pushes (SLSA provenance naming the commit, syft's
SPDX SBOM read from the registry), `rig images verify`, `sbom` and `provenance` show them, and a
rollout refuses, before any host changes, a validly signed image under a tag that names
another commit, and one machine's signed build under another machine's tag."""

import json

import pytest

from .conftest import copy_spec, git, git_checkout, registry_client, rig_at, rig_containers

SERVICE = "affective_processing_center"
PER_MACHINE = "model_ops_coordinator"
run, client, containers = rig_at, registry_client, rig_containers


@pytest.fixture(scope="module")
def checkout(bootstrapped, tmp_path_factory):
    spec = git_checkout(copy_spec(tmp_path_factory.mktemp("provenance")))
    tag = run(spec, "tag").stdout.strip()
    built = run(spec, "build", "--push", "--tag", tag)
    return spec, tag, git(spec, "rev-parse", "HEAD"), built.stdout


def test_every_image_has_a_provenance_naming_the_commit_and_an_sbom(checkout):
    spec, tag, head, _ = checkout
    shown = run(spec, "images", "verify", "--tag", tag, "--json")
    rows = json.loads(shown.stdout)["images"]
    assert rows and all(r["signed"] and r["problem"] is None for r in rows), shown.stdout
    assert {(r["provenance"]["commit"], r["provenance"]["clean"]) for r in rows} == {(head, True)}
    assert all(r["sbom"] and r["sbom"] > 20 for r in rows), [r["sbom"] for r in rows]
    text = run(spec, "images", "verify", "--tag", tag).stdout
    assert text.count(f"provenance: commit {head[:12]}, mainpc, ") == len(rows), text   # build.host
    packages = run(spec, "images", "sbom", PER_MACHINE, "--tag", tag, "--machine", "pc2").stdout
    assert f"{PER_MACHINE}:{tag}-pc2" in packages.splitlines()[0], packages
    names = {line.split()[0] for line in packages.splitlines()[1:]}
    assert {"numpy", "tini", "python3"} <= names, packages      # pip's lock and apt's packages
    shown = run(spec, "images", "provenance", SERVICE, "--tag", tag).stdout
    predicate = json.loads(shown.split("\n", 1)[1])[0]
    assert predicate["buildDefinition"]["externalParameters"]["target"] == SERVICE
    assert {"gitCommit": head} in [d["digest"] for d in predicate["buildDefinition"]["resolvedDependencies"]]
    asked = run(spec, "images", "sbom", PER_MACHINE, "--tag", tag, check=False)
    assert asked.returncode == 1 and "pick one with --machine" in asked.stderr


def test_a_signed_image_under_another_commits_tag_or_another_machines_is_refused(checkout):
    spec, tag, head, _ = checkout
    registry = client(spec)
    other = "20261201-" + ("0" if head[0] != "0" else "1") + head[1:8]
    for image, source in ((SERVICE, tag), (PER_MACHINE, f"{tag}-mainpc"),
                          (PER_MACHINE, f"{tag}-pc2")):
        registry.copy_manifest(f"rig/{image}", source, other + source.removeprefix(tag))
    before = {h: containers(h) for h in ("mainpc", "pc2")}
    refused = run(spec, "rollout", "--tag", other, "--services", SERVICE, "--no-verify", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (f"10.77.0.1:5000/rig/{SERVICE}:{other} (sha256:" in refused.stderr
            and f"its provenance names commit {head[:12]}, not {other[9:]} as the tag says"
            in refused.stderr), refused.stderr
    assert "pre-flight failed: no host was changed" in refused.stderr
    # mainpc's tag now holds pc2's build: signed, of this repository, but not mainpc's image
    registry.copy_manifest(f"rig/{PER_MACHINE}", f"{tag}-pc2", "swapped-mainpc")
    registry.copy_manifest(f"rig/{PER_MACHINE}", f"{tag}-pc2", "swapped-pc2")
    refused = run(spec, "rollout", "--tag", "swapped", "--services", PER_MACHINE, "--no-verify",
                  check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (f"its provenance is of build target '{PER_MACHINE}-pc2', not '{PER_MACHINE}-mainpc'"
            in refused.stderr), refused.stderr
    assert f"{PER_MACHINE}:swapped-pc2" not in refused.stderr    # pc2's own build fits pc2
    assert {h: containers(h) for h in ("mainpc", "pc2")} == before
    shown = run(spec, "images", "verify", "--tag", other, check=False)
    assert shown.returncode == 1 and "DOES NOT FIT" in shown.stdout, shown.stdout
