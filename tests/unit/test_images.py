"""Tags, the expected image set, source hashes, the bake file, the build plan, and the registry
client against recorded registry answers. No host, no engine."""

from datetime import UTC, datetime, timezone
from pathlib import Path

import pytest
import requests
from requests.adapters import BaseAdapter

from rig.build import BakeProgress, plan_build
from rig.commands import bake
from rig.config import load_fleet
from rig.errors import RigError
from rig.images import expected_images, image_for, source_hashes, source_tag
from rig.registry import RegistryClient
from rig.tags import GitState, computed_tag, git_state, resolve_tag

REPO = Path(__file__).resolve().parents[2]
SHA = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
NOW = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)


# -- tags ---------------------------------------------------------------------------------------
def test_tag_is_utc_date_and_eight_char_sha():
    assert computed_tag(NOW, GitState(SHA, dirty=False)) == "20261123-1a2b3c4d"


def test_tag_date_is_utc_not_local():
    from datetime import timedelta
    late_evening_west = datetime(2026, 11, 23, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert computed_tag(late_evening_west, GitState(SHA, False)) == "20261124-1a2b3c4d"


def test_dirty_tree_adds_suffix():
    assert computed_tag(NOW, GitState(SHA, dirty=True)) == "20261123-1a2b3c4d-dirty"


def test_explicit_tag_beats_force_image_tag_beats_git():
    git = GitState(SHA, False)
    assert resolve_tag("v1", {"FORCE_IMAGE_TAG": "20250111-656873b3"}, NOW, git) == "v1"
    assert resolve_tag(None, {"FORCE_IMAGE_TAG": "20250111-656873b3"}, NOW, git) == "20250111-656873b3"
    assert resolve_tag(None, {}, NOW, git) == "20261123-1a2b3c4d"


def test_bad_tags_and_no_git_are_clear_errors():
    with pytest.raises(RigError, match="FORCE_IMAGE_TAG: 'bad tag' is not a valid image tag"):
        resolve_tag(None, {"FORCE_IMAGE_TAG": "bad tag"}, NOW, None)
    with pytest.raises(RigError, match="not a git checkout"):
        resolve_tag(None, {}, NOW, None)
    with pytest.raises(RigError, match="--tag: '-x' is not a valid"):
        resolve_tag("-x", {}, NOW, None)


def test_git_state_sees_a_changed_file(tmp_path):
    import subprocess
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "a").write_text("1")
    git("add", "a")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    clean = git_state(tmp_path)
    assert len(clean.sha) == 40 and not clean.dirty
    (tmp_path / "a").write_text("2")
    assert git_state(tmp_path).dirty
    assert git_state(tmp_path / "nope") is None


# -- the image set ----------------------------------------------------------------------------
def test_expected_images_follow_the_seeds_naming(fleet):
    refs = [i.ref for i in expected_images(fleet, "20261123-1a2b3c4d")]
    assert refs == [
        "ghcr.io/haymayndzultra/ai_system/family-llm-cu121:20261123-1a2b3c4d",
        "ghcr.io/haymayndzultra/ai_system/model_ops_coordinator:20261123-1a2b3c4d-mainpc",
        "ghcr.io/haymayndzultra/ai_system/model_ops_coordinator:20261123-1a2b3c4d-pc2",
        "ghcr.io/haymayndzultra/ai_system/real_time_audio_pipeline:20261123-1a2b3c4d",
        "ghcr.io/haymayndzultra/ai_system/affective_processing_center:20261123-1a2b3c4d",
    ]


def test_per_machine_images_carry_the_profiles_build_args(fleet):
    images = {i.target: i for i in expected_images(fleet, "T")}
    assert images["model_ops_coordinator-mainpc"].args == {"MACHINE": "mainpc", "CUDA_ARCH": "8.9"}
    assert images["model_ops_coordinator-pc2"].args == {"MACHINE": "pc2", "CUDA_ARCH": "8.6"}
    assert images["real_time_audio_pipeline"].args == {}
    assert images["llm-cu121"].args == {"BASE_IMAGE": "nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04"}


def test_each_host_runs_its_machines_variant(fleet):
    assert image_for(fleet, "model_ops_coordinator", "pc2", "T").tag == "T-pc2"
    assert image_for(fleet, "real_time_audio_pipeline", "pc2", "T").tag == "T"


def test_extra_build_args_reach_one_service_only(fleet):
    images = {i.target: i for i in expected_images(
        fleet, "T", {"affective_processing_center": {"FAULT": "degraded"}})}
    assert images["affective_processing_center"].args == {"FAULT": "degraded"}
    assert "FAULT" not in images["model_ops_coordinator-pc2"].args


# -- source hashes ----------------------------------------------------------------------------
def _spec_copy(tmp_path):
    import shutil
    for name in ("fleet.yml", "lab.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    for folder in ("profiles", "dockerfiles"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    return tmp_path


def test_changing_one_service_changes_only_its_hash(tmp_path):
    spec = _spec_copy(tmp_path)
    fleet = load_fleet(spec / "fleet.yml")
    before = source_hashes(fleet, expected_images(fleet, "T"))
    (spec / "dockerfiles/services/affective_processing_center/app/main.py").write_text("# changed\n")
    cache = spec / "dockerfiles/services/model_ops_coordinator/app/__pycache__"
    cache.mkdir()
    (cache / "main.cpython-313.pyc").write_bytes(b"x")
    after = source_hashes(fleet, expected_images(fleet, "T2"))
    changed = sorted(t for t in before if before[t] != after[t])
    assert changed == ["affective_processing_center"]  # the tag and caches do not count


def test_changing_the_family_changes_every_service(tmp_path):
    spec = _spec_copy(tmp_path)
    fleet = load_fleet(spec / "fleet.yml")
    before = source_hashes(fleet, expected_images(fleet, "T"))
    with open(spec / "dockerfiles/families/llm-cu121/rigsvc.py", "a") as f:
        f.write("\n# changed\n")
    after = source_hashes(fleet, expected_images(fleet, "T"))
    assert all(before[t] != after[t] for t in before)


def test_machine_variants_and_build_args_have_their_own_hash(fleet):
    plain = source_hashes(fleet, expected_images(fleet, "T"))
    broken = source_hashes(fleet, expected_images(fleet, "T", {"model_ops_coordinator": {"FAULT": "crash"}}))
    assert plain["model_ops_coordinator-mainpc"] != plain["model_ops_coordinator-pc2"]
    assert broken["model_ops_coordinator-mainpc"] != plain["model_ops_coordinator-mainpc"]
    assert broken["real_time_audio_pipeline"] == plain["real_time_audio_pipeline"]
    assert source_tag("ab" * 32) == "src-" + "ab" * 12


# -- the bake file ----------------------------------------------------------------------------
def test_bake_file_for_the_lab(lab_fleet):
    images = expected_images(lab_fleet, "20261123-1a2b3c4d")
    hashes = {i.target: f"{n:064x}" for n, i in enumerate(images, start=1)}
    doc = bake.bake_file(lab_fleet, images, hashes, build=["model_ops_coordinator-pc2"],
                         revision=SHA, created="2026-11-23T23:30:00Z", cache="inline",
                         secret_src="/var/tmp/rig-build/ctx/.secrets/pip_ca")
    assert doc["group"] == {"default": {"targets": ["model_ops_coordinator-pc2"]}}
    assert doc["target"]["model_ops_coordinator-pc2"] == {
        "context": "dockerfiles/services/model_ops_coordinator",
        "dockerfile": "Dockerfile",
        "platforms": ["linux/amd64"],
        "tags": [
            "10.77.0.1:5000/rig/model_ops_coordinator:20261123-1a2b3c4d-pc2",
            "10.77.0.1:5000/rig/model_ops_coordinator:src-" + f"{3:064x}"[:24],
            "10.77.0.1:5000/rig/model_ops_coordinator:buildcache-pc2",
        ],
        "labels": {
            "org.opencontainers.image.title": "model_ops_coordinator",
            "org.opencontainers.image.version": "20261123-1a2b3c4d-pc2",
            "org.opencontainers.image.revision": SHA,
            "org.opencontainers.image.created": "2026-11-23T23:30:00Z",
            "org.opencontainers.image.source": "https://github.com/haymayndzultra/ai_system",
            "io.rig.kind": "service",
            "io.rig.family": "llm-cu121",
            "io.rig.machine": "pc2",
            "io.rig.source-hash": f"{3:064x}",
        },
        "output": ["type=docker"],
        "args": {"CUDA_ARCH": "8.6", "MACHINE": "pc2"},
        "contexts": {"family": "target:llm-cu121"},
        "cache-from": ["type=registry,ref=10.77.0.1:5000/rig/model_ops_coordinator:buildcache-pc2"],
        "cache-to": ["type=inline"],
        "secret": ["id=pip_ca,src=/var/tmp/rig-build/ctx/.secrets/pip_ca"],
    }
    family = doc["target"]["llm-cu121"]
    assert family["args"] == {"BASE_IMAGE": "10.77.0.1:5000/rig/lab-base:trixie"}
    assert "contexts" not in family
    assert family["labels"]["io.rig.kind"] == "family"


def test_registry_cache_and_production_defaults(fleet):
    images = expected_images(fleet, "T")
    hashes = {i.target: "0" * 64 for i in images}
    doc = bake.bake_file(fleet, images, hashes, build=["llm-cu121"], revision=SHA,
                         created="c", cache="registry", secret_src=None)
    family = doc["target"]["llm-cu121"]
    ref = "ghcr.io/haymayndzultra/ai_system/buildcache:llm-cu121"
    assert family["cache-from"] == [f"type=registry,ref={ref}"]
    assert family["cache-to"] == [f"type=registry,ref={ref},mode=max"]
    assert family["tags"][-1].endswith(":src-" + "0" * 24)  # no cache tag outside inline mode
    assert "secret" not in family


def test_cache_mode_follows_the_builder():
    assert bake.cache_mode("auto", "docker")[0] == "inline"
    assert bake.cache_mode("auto", "docker-container")[0] == "registry"
    assert bake.cache_mode("registry", "docker") == (
        "inline", "cache: registry asked, but builder driver docker cannot export it; using inline")
    assert bake.cache_mode("none", "docker")[0] == "none"


def test_bake_and_push_commands():
    assert bake.bake_command("/var/tmp/rig-build/ctx", ["llm-cu121", "a b"]) == (
        "cd /var/tmp/rig-build/ctx && docker buildx bake -f docker-bake.json --progress plain "
        "llm-cu121 'a b'")
    assert bake.push_command(["r/x:1", "r/x:src-2"]) == "docker push -q r/x:1 && docker push -q r/x:src-2"


def test_bake_progress_shows_each_step_once():
    lines = []
    progress = BakeProgress(lines.append)
    for line in ["#1 [internal] load build definition from Dockerfile",
                 "#5 [llm-cu121 builder 2/2] RUN pip wheel", "#5 0.512 Collecting numpy",
                 "#5 [llm-cu121 builder 2/2] RUN pip wheel", "#6 CACHED",
                 "ERROR: failed to solve: exit code 1"]:
        progress(line)
    assert lines == ["[llm-cu121 builder 2/2] RUN pip wheel", "ERROR: failed to solve: exit code 1"]
    assert progress.cached == 1


# -- the build plan ---------------------------------------------------------------------------
def test_plan_builds_missing_reuses_same_sources_skips_present(fleet):
    images = expected_images(fleet, "T2")
    hashes = source_hashes(fleet, images)
    registry = {("family-llm-cu121", "T2"): "sha256:f",
                ("real_time_audio_pipeline", source_tag(hashes["real_time_audio_pipeline"])): "sha256:r"}
    lookup = lambda image, tag: registry.get((image.repository.rsplit("/", 1)[1], tag))  # noqa: E731
    plan = plan_build(images, hashes, "T2", lookup)
    assert plan.present == {"llm-cu121": "sha256:f"}
    assert plan.reuse == {"real_time_audio_pipeline": source_tag(hashes["real_time_audio_pipeline"])}
    assert plan.build == ["model_ops_coordinator-mainpc", "model_ops_coordinator-pc2",
                          "affective_processing_center"]
    assert [i.target for i in plan.needed()] == ["llm-cu121", "model_ops_coordinator-mainpc",
                                                 "model_ops_coordinator-pc2", "affective_processing_center"]
    rebuild = plan_build(images, hashes, "T2", lookup, rebuild=True)
    assert rebuild.build == [i.target for i in images] and not rebuild.present


# -- the registry client, against recorded answers ----------------------------------------------
class Replay(BaseAdapter):
    """Answers requests from a list of (method, url, status, headers, body), in order."""

    def __init__(self, answers):
        super().__init__()
        self.answers, self.seen = list(answers), []

    def send(self, request, **kwargs):
        method, url, status, headers, body = self.answers.pop(0)
        assert (request.method, request.url) == (method, url)
        self.seen.append(request)
        response = requests.Response()
        response.status_code, response.headers, response._content = status, headers, body
        response.request, response.url = request, request.url
        return response

    def close(self):
        pass


GHCR_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="https://ghcr.io/token",service="ghcr.io",'
                  'scope="repository:o/app:pull"'}


def _client(answers, host="ghcr.io"):
    client = RegistryClient(host, "user", "s3cret")
    replay = Replay(answers)
    client._session.mount("https://", replay)
    return client, replay


def test_ghcr_token_exchange_then_digest():
    digest = "sha256:" + "a" * 64
    client, replay = _client([
        ("HEAD", "https://ghcr.io/v2/o/app/manifests/T", 401, GHCR_CHALLENGE, b""),
        ("GET", "https://ghcr.io/token?service=ghcr.io&scope=repository%3Ao%2Fapp%3Apull", 200, {},
         b'{"token": "tkn"}'),
        ("HEAD", "https://ghcr.io/v2/o/app/manifests/T", 200, {"Docker-Content-Digest": digest}, b""),
        ("HEAD", "https://ghcr.io/v2/o/app/manifests/T3", 404, {}, b""),
    ])
    assert client.manifest_digest("o/app", "T") == digest
    assert replay.seen[1].headers["Authorization"].startswith("Basic ")
    assert replay.seen[2].headers["Authorization"] == "Bearer tkn"
    assert client.manifest_digest("o/app", "T3") is None  # the token is reused for the scope
    assert "application/vnd.oci.image.index.v1+json" in replay.seen[2].headers["Accept"]


def test_basic_auth_registry_and_manifest_copy():
    client, replay = _client([
        ("GET", "https://10.77.0.1:5000/v2/rig/app/manifests/src-1", 401,
         {"WWW-Authenticate": 'Basic realm="registry"'}, b""),
        ("GET", "https://10.77.0.1:5000/v2/rig/app/manifests/src-1", 200,
         {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, b'{"m": 1}'),
        ("PUT", "https://10.77.0.1:5000/v2/rig/app/manifests/T2", 201,
         {"Docker-Content-Digest": "sha256:b"}, b""),
        ("HEAD", "https://10.77.0.1:5000/v2/rig/app/manifests/T2", 200,
         {"Docker-Content-Digest": "sha256:b"}, b""),
    ], host="10.77.0.1:5000")
    assert client.copy_manifest("rig/app", "src-1", "T2") == "sha256:b"
    put = replay.seen[-1]
    assert put.body == b'{"m": 1}'
    assert put.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
    # a registry that asked for basic auth once gets it up front: one request per call, not two
    assert "Authorization" not in replay.seen[0].headers
    assert [r.headers["Authorization"].startswith("Basic ") for r in replay.seen[1:]] == [True, True]
    assert client.manifest_digest("rig/app", "T2") == "sha256:b"
    assert replay.seen[-1].headers["Authorization"].startswith("Basic ")
    assert client.requests == 4 and not replay.answers


class Challenging(BaseAdapter):
    """A registry that challenges every request without credentials (basic, or bearer with a
    token per scope) and lets other requests in while it answers (gevent.sleep)."""

    def __init__(self, scheme):
        super().__init__()
        self.scheme, self.seen = scheme, []

    def send(self, request, **kwargs):
        import gevent

        gevent.sleep(0.01)
        auth = request.headers.get("Authorization")
        self.seen.append((request.method, request.url.split("/v2/")[-1], auth is not None))
        response = requests.Response()
        response.request, response.url, response.headers = request, request.url, {}
        response.status_code, response._content = 200, b""
        if request.url.startswith("https://ghcr.io/token"):
            response._content = b'{"token": "tkn"}'
        elif auth is None:
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Basic realm="r"' if self.scheme == "basic" \
                else 'Bearer realm="https://ghcr.io/token",service="ghcr.io"'
        else:
            response.headers["Docker-Content-Digest"] = "sha256:" + "a" * 64
        return response

    def close(self):
        pass


@pytest.mark.parametrize("scheme, challenges", [("basic", 1), ("bearer", 3)])
def test_look_ups_side_by_side_meet_one_challenge_not_one_each(scheme, challenges):
    """Basic auth: the first look-up learns it, the others send it up front. Bearer (GHCR):
    one challenge and one token per scope; once the first scope has taught the scheme, the
    other scopes get their tokens side by side, each scope's look-ups waiting for its own."""
    from gevent.pool import Pool

    client = RegistryClient("ghcr.io", "user", "s3cret")
    registry = Challenging(scheme)
    client._session.mount("https://", registry)
    refs = [("o/a", "T1"), ("o/b", "T1"), ("o/c", "T1"), ("o/b", "T2"), ("o/c", "T2"),
            ("o/a", "T2")]
    assert Pool(8).map(lambda ref: client.manifest_digest(*ref), refs) == ["sha256:" + "a" * 64] * 6
    refused = [url for _, url, auth in registry.seen if not auth]
    assert len(refused) == challenges, registry.seen
    tokens = [url for _, url, _ in registry.seen if url.startswith("https://ghcr.io/token")]
    assert len(tokens) == (3 if scheme == "bearer" else 0)
    assert client.requests == len(registry.seen) == 6 + challenges + len(tokens)
    if scheme == "bearer":      # b's and c's challenges both came before either's token
        urls = [url for _, url, _ in registry.seen]
        assert max(urls.index("o/b/manifests/T1"), urls.index("o/c/manifests/T1")) \
            < urls.index(tokens[1]), registry.seen


def test_a_registry_that_does_not_answer_the_first_look_up_does_not_queue_the_others():
    """The look-up that was to learn the auth scheme fails (no answer): the others, which
    waited for it, then go at once, not one deadline after another."""
    from gevent.pool import Pool

    events = []

    class Silent(BaseAdapter):
        def send(self, request, **kwargs):
            import gevent

            n = request.url.rsplit("/", 1)[-1]
            events.append(f"start {n}")
            gevent.sleep(0.1)
            events.append(f"end {n}")
            raise requests.exceptions.ConnectTimeout("timed out")

        def close(self):
            pass
    client = RegistryClient("10.77.0.1:5000", "user", "s3cret")
    client._session.mount("https://", Silent())

    def look(tag):
        try:
            return client.manifest_digest("rig/app", tag)
        except RigError as e:
            return str(e)
    answers = Pool(8).map(look, ["T1", "T2", "T3"])
    assert all("no answer" in a for a in answers), answers
    assert events[:2] == ["start T1", "end T1"]
    assert sorted(events[2:4]) == ["start T2", "start T3"], events


def test_credentials_refused_when_sent_up_front_are_one_line_not_a_loop():
    client, replay = _client([
        ("HEAD", "https://10.77.0.1:5000/v2/rig/app/manifests/T1", 401,
         {"WWW-Authenticate": 'Basic realm="registry"'}, b""),
        ("HEAD", "https://10.77.0.1:5000/v2/rig/app/manifests/T1", 404, {}, b""),
        ("HEAD", "https://10.77.0.1:5000/v2/rig/app/manifests/T2", 401,
         {"WWW-Authenticate": 'Basic realm="registry"'}, b""),
    ], host="10.77.0.1:5000")
    assert client.manifest_digest("rig/app", "T1") is None
    with pytest.raises(RigError, match="credentials refused for user"):
        client.manifest_digest("rig/app", "T2")
    assert client.requests == 3 and not replay.answers


def test_refused_credentials_are_one_clear_line():
    client, _ = _client([
        ("HEAD", "https://ghcr.io/v2/o/app/manifests/T", 401, GHCR_CHALLENGE, b""),
        ("GET", "https://ghcr.io/token?service=ghcr.io&scope=repository%3Ao%2Fapp%3Apull", 401, {}, b""),
    ])
    with pytest.raises(RigError, match="token request refused \\(401\\); check the username and token"):
        client.manifest_digest("o/app", "T")


def test_bake_targets_as_build_commands_when_bake_cannot_set_the_network(lab_fleet):
    images = expected_images(lab_fleet, "T")
    hashes = {i.target: "0" * 64 for i in images}
    doc = bake.bake_file(lab_fleet, images, hashes, build=["real_time_audio_pipeline"], revision=SHA,
                         created="c", cache="inline", secret_src="/s/pip_ca")
    commands = bake.build_commands(doc, "/b/ctx", "host")
    assert commands[0] == "cd /b/ctx"
    assert commands[1] == "echo '== llm-cu121'"  # the family it builds FROM comes first
    assert commands[3] == "echo '== real_time_audio_pipeline'"
    service = commands[4]
    assert service.startswith("docker buildx build --progress plain --network host "
                              "-f dockerfiles/services/real_time_audio_pipeline/Dockerfile "
                              "--platform linux/amd64 "
                              "--label org.opencontainers.image.title=real_time_audio_pipeline ")
    assert ("--build-context family=docker-image://10.77.0.1:5000/rig/family-llm-cu121:T" in service)
    assert service.endswith("--cache-to type=inline --secret id=pip_ca,src=/s/pip_ca "
                            "--output type=docker dockerfiles/services/real_time_audio_pipeline")
    assert len(commands) == 5
