"""Images on the real lab: bake on mainpc (a bootstrapped host, over SSH), push to the TLS
registry with auth, verify in the registry, and look inside the images that were pushed.

Builds run in a copy of the spec (tests change service sources there), with explicit tags."""

import json
import time

import pytest

from .conftest import copy_spec, rig, ssh

T1, T2, T3 = "lab-t1", "lab-t2", "lab-t3"


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    return copy_spec(tmp_path_factory.mktemp("images"))


def build(spec, *args, check=True):
    return rig("-c", str(spec / "fleet.yml"), "build", "-i", "inventory/lab.py", *args,
               check=check, cwd=spec)


def verify(spec, tag, check=True):
    result = rig("-c", str(spec / "fleet.yml"), "images", "verify", "-i", "inventory/lab.py",
                 "--tag", tag, "--json", check=check, cwd=spec)
    return result, json.loads(result.stdout)


def test_cold_build_pushes_every_image_and_verify_lists_each_digest(spec):
    started = time.monotonic()
    result = build(spec, "--push", "--tag", T1)
    print(f"cold build {time.monotonic() - started:.1f} s\n{result.stdout}")
    assert "cache: inline (builder driver docker cannot export a registry cache)" in result.stdout
    assert "built 5, tagged 0, present 0" in result.stdout
    _, report = verify(spec, T1)
    assert [row["image"] for row in report["images"]] == [
        f"10.77.0.1:5000/rig/family-llm-cu121:{T1}",
        f"10.77.0.1:5000/rig/model_ops_coordinator:{T1}-mainpc",
        f"10.77.0.1:5000/rig/model_ops_coordinator:{T1}-pc2",
        f"10.77.0.1:5000/rig/real_time_audio_pipeline:{T1}",
        f"10.77.0.1:5000/rig/affective_processing_center:{T1}",
    ]
    assert all(row["digest"].startswith("sha256:") for row in report["images"])
    assert report["missing"] == 0


def test_second_build_builds_and_pushes_nothing(spec):
    result = build(spec, "--push", "--tag", T1)
    assert "built 0, tagged 0, present 5" in result.stdout
    assert "target " not in result.stdout and "pushed" not in result.stdout


def test_one_changed_service_is_the_only_image_built(spec):
    _, before = verify(spec, T1)
    main = spec / "dockerfiles/services/affective_processing_center/app/main.py"
    main.write_text(main.read_text().replace('"ok": (0.2, -0.1)', '"ok": (0.25, -0.1)'))
    result = build(spec, "--push", "--tag", T2)
    print(result.stdout)
    assert "built 1, tagged 4, present 0" in result.stdout
    assert "target affective_processing_center" in result.stdout
    assert "target model_ops_coordinator" not in result.stdout
    _, after = verify(spec, T2)
    old = {row["image"].rsplit(":", 1)[0] + row["image"].rsplit(":", 1)[1].replace(T1, ""): row["digest"]
           for row in before["images"]}
    new = {row["image"].rsplit(":", 1)[0] + row["image"].rsplit(":", 1)[1].replace(T2, ""): row["digest"]
           for row in after["images"]}
    changed = sorted(name for name in new if new[name] != old[name])
    assert changed == ["10.77.0.1:5000/rig/affective_processing_center"]


def test_a_failed_build_pushes_nothing(spec):
    lock = spec / "dockerfiles/services/real_time_audio_pipeline/requirements.lock"
    good = lock.read_text()
    lock.write_text(good.replace("sha256:b9acddd6", "sha256:00000000"))
    try:
        result = build(spec, "--push", "--tag", T3, check=False)
    finally:
        lock.write_text(good)
    assert result.returncode == 1
    assert "nothing was pushed" in result.stderr
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in result.stdout + result.stderr
    failed, report = verify(spec, T3, check=False)
    assert failed.returncode == 1
    assert report["missing"] == 5  # not even the family, which built fine


def test_verify_names_missing_images_and_exits_1(spec):
    result = rig("-c", str(spec / "fleet.yml"), "images", "verify", "--tag", "never-built",
                 check=False, cwd=spec)
    assert result.returncode == 1
    assert "10.77.0.1:5000/rig/family-llm-cu121:never-built" in result.stdout
    assert result.stdout.count("MISSING") == 5
    assert "0 of 5 present" in result.stdout


def test_dirty_work_tree_refuses_to_push(spec):
    import subprocess
    git = ["git", "-C", str(spec), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "fleet.yml"], check=True)
    subprocess.run([*git, "commit", "-qm", "spec"], check=True)
    try:
        result = build(spec, "--push", check=False)  # dockerfiles/ etc. are untracked: dirty
        assert result.returncode == 1
        assert "-dirty): commit them, or pass --allow-dirty" in result.stderr
        assert "target " not in result.stdout
    finally:
        subprocess.run(["rm", "-rf", str(spec / ".git")], check=True)


def test_images_run_as_10001_with_tini_as_pid_1(spec):
    image = f"10.77.0.1:5000/rig/real_time_audio_pipeline:{T1}"
    ssh("mainpc", f"docker pull -q {image}")
    inspect = json.loads(ssh("mainpc", f"docker image inspect {image}").stdout)[0]["Config"]
    assert inspect["User"] == "10001:10001"
    assert inspect["Entrypoint"] == ["/usr/bin/tini", "--"]
    assert inspect["Labels"]["io.rig.family"] == "llm-cu121"
    assert inspect["Labels"]["org.opencontainers.image.version"] == T1
    ssh("mainpc", f"docker run -d --name rig-image-test --network rig -p 127.0.0.1:36557:6557 "
                  f"-v /etc/rig/machine-profile.json:/etc/rig/machine-profile.json:ro {image}")
    try:
        inside = ssh("mainpc", "docker exec rig-image-test sh -c "
                               "'cat /proc/1/comm; id -u; id -g; tr \"\\0\" \" \" < /proc/1/cmdline'").stdout
        comm, uid, gid, cmdline = inside.splitlines()
        assert (comm, uid, gid) == ("tini", "10001", "10001")
        assert cmdline.strip() == "/usr/bin/tini -- python /app/main.py"
        body = ssh("mainpc", "for i in $(seq 50); do curl -fs 127.0.0.1:36557/health && exit 0; "
                             "sleep 0.1; done; exit 1").stdout
        assert json.loads(body)["status"] == "ok"
        started = time.monotonic()
        ssh("mainpc", "docker stop -t 10 rig-image-test")
        assert time.monotonic() - started < 5  # SIGTERM ends it at once, not the 10 s timeout
    finally:
        ssh("mainpc", "docker rm -f rig-image-test", check=False)
