"""Day-2 logic without hosts: log merging, exec's exit code, prune's choices, hooks (real
executables), and the commands' exact lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig.commands import day2
from rig.errors import RigError
from rig.ops.day2 import check_since, merge_logs
from rig.ops.hooks import run_hook
from rig.prune import HostContainer, HostImage, parse_inventory, plan_prune

RIG = str(Path(sys.executable).with_name("rig"))


def test_logs_of_two_hosts_merge_in_time_order():
    lines = merge_logs({
        "mainpc": "2026-11-24T01:00:00.000000001Z a1\n2026-11-24T01:00:02.000000000Z a2\n",
        "pc2": "2026-11-24T01:00:01.500000000Z b1\n  continued\n2026-11-24T01:00:03Z b2\n"})
    assert [(line.host, line.text) for line in lines] == [
        ("mainpc", "a1"), ("pc2", "b1"), ("pc2", "  continued"), ("mainpc", "a2"), ("pc2", "b2")]


def test_log_and_exec_commands():
    assert day2.logs_command("svc", "10m", 50).line == \
        "docker logs --timestamps --since 10m --tail 50 rig-svc 2>&1"
    assert day2.logs_command("svc", follow=True).line == \
        "docker logs --timestamps --follow rig-svc 2>&1"
    assert day2.exec_command("svc", ["sh", "-c", "exit 7"]).line == (
        "docker exec -u 10001:10001 rig-svc sh -c 'exit 7' 2>&1; echo \"rig-exit-code:$?\"")
    assert day2.exec_command("svc", ["sh"], interactive=True).line == \
        "docker exec -it -u 10001:10001 rig-svc sh"
    assert day2.parse_exit("10001\nrig-exit-code:0\n") == ("10001", 0)
    assert day2.parse_exit("oops\nrig-exit-code:7") == ("oops", 7)
    assert day2.parse_exit("no mark") == ("no mark", 255)
    assert check_since("10m") == "10m"
    with pytest.raises(RigError, match="--since '10 minutes'"):
        check_since("10 minutes")


def image(repo, tag, digest, id_, created, size=100):
    return HostImage(repo, tag, digest, id_, created, size)


def test_prune_keeps_what_runs_what_a_rollback_needs_and_the_newest():
    repo = "reg/rig/svc"
    images = [image(repo, "<none>", f"sha256:d{i}", f"sha256:i{i}", f"2026-11-2{i} 00:00:00")
              for i in range(1, 7)]
    containers = [HostContainer("rig-svc", "sha256:i1", "svc"),         # runs the oldest
                  HostContainer("rig-svc-prev", "sha256:i2", "svc")]    # kept for the rollout
    state = {"svc": {"digest": "sha256:d1", "previous": {"digest": "sha256:d3"}}}
    plan = plan_prune(images, containers, state, {repo: "svc"}, keep=2)
    assert [i.id for i in plan.images] == ["sha256:i4"]  # 6,5 newest; 1 runs; 2 kept; 3 previous
    assert plan.kept == {repo: 5} and plan.orphans == [] and plan.freed == 100


def test_prune_removes_orphans_and_their_images_and_leaves_other_repositories():
    images = [image("reg/rig/ghost", "t", "sha256:g", "sha256:ig", "2026-11-20 00:00:00", 5),
              image("debian", "trixie", "sha256:x", "sha256:ix", "2026-11-01 00:00:00")]
    containers = [HostContainer("rig-ghost", "sha256:ig", "ghost"),
                  HostContainer("other", "sha256:ix", "")]
    plan = plan_prune(images, containers, {}, {"reg/rig/svc": "svc"}, keep=3)
    assert plan.orphans == ["rig-ghost"] and [i.id for i in plan.images] == ["sha256:ig"]


def test_prune_reads_what_the_host_listed():
    out = ("--- images\nreg/rig/svc\tt1\tsha256:d\tsha256:i\t2026-11-24 01:00:00 +0000 UTC\t1.05GB\n"
           "--- containers\n/rig-svc\tsha256:i\tsvc\n/other\tsha256:j\t<no value>\n")
    images, containers = parse_inventory(out)
    assert images == [HostImage("reg/rig/svc", "t1", "sha256:d", "sha256:i",
                                "2026-11-24 01:00:00 +0000 UTC", 1_050_000_000)]
    assert containers == [HostContainer("rig-svc", "sha256:i", "svc"),
                          HostContainer("other", "sha256:j", "")]
    assert day2.remove_command(["rig-ghost"], ["sha256:i"]).line == \
        "docker rm -f rig-ghost && docker rmi -f sha256:i"


def hook(folder: Path, name: str, body: str, mode=0o755) -> None:
    (folder / "hooks").mkdir(exist_ok=True)
    path = folder / "hooks" / name
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, mode)


def test_hooks_get_their_variables_and_a_failing_pre_hook_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("RIG_OPERATOR", "zoe@ctl")
    said = []
    assert run_hook(tmp_path, "pre-deploy", said.append, tag="T") is None  # no hook: fine
    hook(tmp_path, "post-rollout", 'echo "$RIG_TAG|$RIG_HOSTS|$RIG_SERVICES|$RIG_RESULT|'
                                    '$RIG_OPERATOR|$(pwd)"\n')
    assert run_hook(tmp_path, "post-rollout", said.append, tag="T1", hosts=["mainpc", "pc2"],
                    services=["svc"], result="ok") == 0
    assert said == [f"hook post-rollout: T1|mainpc,pc2|svc|ok|zoe@ctl|{tmp_path}"]
    hook(tmp_path, "pre-rollout", "echo no; exit 3\n")
    with pytest.raises(RigError, match="hook pre-rollout exited 3: stopped before any host"):
        run_hook(tmp_path, "pre-rollout", said.append, tag="T1")
    hook(tmp_path, "post-deploy", "exit 1\n")
    assert run_hook(tmp_path, "post-deploy", said.append) == 1  # reported, not raised
    hook(tmp_path, "rollback", "true\n", mode=0o644)
    with pytest.raises(RigError, match=r"chmod \+x"):
        run_hook(tmp_path, "rollback", said.append)


def test_the_shipped_example_hook_appends_a_line(tmp_path):
    example = Path(__file__).resolve().parents[2] / "hooks" / "post-deploy.example"
    env = {**os.environ, "RIG_TAG": "T9", "RIG_RESULT": "ok", "RIG_OPERATOR": "ops@ctl",
           "RIG_HOSTS": "mainpc", "RIG_SERVICES": "svc", "RIG_DEPLOY_LOG": str(tmp_path / "d.log")}
    for _ in range(2):
        subprocess.run([str(example)], env=env, check=True, cwd=tmp_path)
    lines = (tmp_path / "d.log").read_text().splitlines()
    assert len(lines) == 2 and lines[0].endswith("T9 ok ops@ctl mainpc svc")


@pytest.mark.parametrize("verb", [["logs"], ["exec"], ["lock", "status"], ["lock", "release"],
                                  ["prune"], ["promote"], ["abort"], ["deploy"], ["stop"],
                                  ["start"], ["restart"]])
def test_every_day2_verb_explains_itself_with_an_example(verb):
    out = subprocess.run([RIG, *verb, "--help"], capture_output=True, text=True, check=True).stdout
    assert "Example:" in out and "rig " + verb[0] in out


def test_a_background_job_is_stopped_by_its_process_group_in_dash_syntax():
    """`kill -TERM -- -PGID` fails silently in dash (Debian's sh): the follower lived on."""
    from rig.commands.jobs import job_start, job_stop

    assert job_stop("/w").line == "kill -TERM -$(cat /w/pid) 2>/dev/null || true"
    assert "echo $$ >pid;" in job_start(day2.logs_command("svc", follow=True), "/w").line
