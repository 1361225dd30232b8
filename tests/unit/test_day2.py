"""Day-2 logic without hosts: log merging, exec's exit code, prune's choices, hooks (real
executables), and the commands' exact lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from rig.commands import day2, jobs
from rig.commands.base import Cmd, sh
from rig.errors import RigError
from rig.ops import day2 as ops_day2
from rig.ops import hooks
from rig.ops.day2 import check_since, merge_logs
from rig.ops.hooks import credential_variables, run_hook
from rig.ops.job import Job
from rig.prune import HostContainer, HostImage, parse_inventory, plan_prune
from tasks.util import Shell

RIG = str(Path(sys.executable).with_name("rig"))
REPO = Path(__file__).resolve().parents[2]


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
    # the orphan's images are found in rig's namespace, under the service's name
    assert plan_prune(images, containers, {}, {"reg/rig/svc": "svc"}, keep=3).refs == []
    plan = plan_prune(images, containers, {}, {"reg/rig/svc": "svc"}, keep=3, namespace="reg/rig/")
    assert plan.orphans == ["rig-ghost"] and plan.refs == ["reg/rig/ghost:t"] and plan.freed == 5


def test_prune_removes_rigs_tags_only_never_an_image_id():
    """An image ID names every tag it carries: `rmi -f ID` dropped the tags other repositories
    have on it. Each row goes by its reference; an image that keeps another repository's tag
    only loses rig's tags, and frees nothing."""
    repo = "reg/rig/svc"
    images = [image(repo, "T1", "sha256:d1", "sha256:i1", "2026-11-21 00:00:00", 10),
              image(repo, "T1-old", "sha256:d1", "sha256:i1", "2026-11-21 00:00:00", 10),
              image("mirror.example/svc", "pinned", "sha256:d1", "sha256:i1", "2026-11-21 00:00:00", 10),
              image(repo, "<none>", "sha256:d2", "sha256:i2", "2026-11-22 00:00:00", 20),
              image(repo, "T3", "sha256:d3", "sha256:i3", "2026-11-23 00:00:00", 30),
              image(repo, "T3", "sha256:d3b", "sha256:i3", "2026-11-23 00:00:00", 30),
              image(repo, "<none>", "<none>", "sha256:i4", "2026-11-24 00:00:00", 40),
              image(repo, "T5", "sha256:d5", "sha256:i5", "2026-11-25 00:00:00", 50)]
    plan = plan_prune(images, [HostContainer("rig-svc", "sha256:i5", "svc")], {}, {repo: "svc"},
                      keep=1, namespace="reg/rig/")
    assert plan.refs == ["reg/rig/svc:T3", "reg/rig/svc@sha256:d2", "reg/rig/svc:T1",
                         "reg/rig/svc:T1-old"]
    # i1 keeps mirror.example/svc:pinned, i4 has no name to remove it by: only i2 and i3 go
    assert plan.freed == 20 + 30 and plan.kept == {repo: 1}
    assert day2.remove_command(["rig-ghost"], plan.refs).line == (
        "docker rm -f rig-ghost && docker rmi reg/rig/svc:T3 reg/rig/svc@sha256:d2 "
        "reg/rig/svc:T1 reg/rig/svc:T1-old")
    for not_a_ref in (["sha256:i1"], ["0123abcd"], ["-f"]):
        with pytest.raises(ValueError):
            day2.remove_command([], not_a_ref)


def test_prune_reads_what_the_host_listed():
    out = ("--- images\nreg/rig/svc\tt1\tsha256:d\tsha256:i\t2026-11-24 01:00:00 +0000 UTC\t1.05GB\n"
           "--- containers\n/rig-svc\tsha256:i\tsvc\n/other\tsha256:j\t<no value>\n")
    images, containers = parse_inventory(out)
    assert images == [HostImage("reg/rig/svc", "t1", "sha256:d", "sha256:i",
                                "2026-11-24 01:00:00 +0000 UTC", 1_050_000_000)]
    assert containers == [HostContainer("rig-svc", "sha256:i", "svc"),
                          HostContainer("other", "sha256:j", "")]
    assert day2.remove_command(["rig-ghost"], ["reg/rig/svc:t1"]).line == \
        "docker rm -f rig-ghost && docker rmi reg/rig/svc:t1"
    assert day2.remove_command([], []).line == "true"


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

    assert job_stop("/w").line == (
        "p=$(cat /w/pid 2>/dev/null); case $p in ''|0*|*[!0-9]*) ;; "
        '*) [ "$p" -gt 1 ] && kill -TERM -$p 2>/dev/null ;; esac; true')
    assert "echo $$ >pid;" in job_start(day2.logs_command("svc", follow=True), "/w").line


# -- logs -f: a private job folder, a job bound to its follower, a guarded stop --------------------
@pytest.mark.parametrize("content, signalled", [
    ("-1", ""), ("1", ""), ("0", ""), ("007", ""), ("abc", ""), ("", ""), ("12 34", ""),
    (" 5", ""), ("-4242", ""), (None, ""), ("4242", "kill -TERM -4242\n")])
def test_job_stop_signals_only_a_process_group_above_1(tmp_path, content, signalled):
    """A pid file planted with -1 made the cleanup `kill -TERM -1`: every process of the user.
    (A shell function shadows the kill builtin here: nothing is signalled by this test.)"""
    if content is not None:
        (tmp_path / "pid").write_text(content)
    shadow = 'kill() { echo "kill $*"; }; '
    done = subprocess.run(["sh", "-c", shadow + jobs.job_stop(str(tmp_path)).line],
                          capture_output=True, text=True, timeout=10)
    assert (done.returncode, done.stdout) == (0, signalled)


def test_log_jobs_get_a_private_folder_and_a_job_bound_to_rig():
    assert jobs.job_dir_create(day2.LOGS_ROOT).line == (
        "{ [ ! -L /var/lib/rig/logs ] || { echo 'rig: /var/lib/rig/logs is a symlink: refusing it' "
        ">&2; exit 1; }; } && install -d -m 0700 -o root -g root /var/lib/rig/logs "
        "&& mktemp -d /var/lib/rig/logs/XXXXXXXX")
    assert jobs.parse_job_dir("/var/lib/rig/logs/Ab3dE6gH\n", day2.LOGS_ROOT) == \
        "/var/lib/rig/logs/Ab3dE6gH"
    for answer in ("", "/tmp/x\n", "/var/lib/rig/logs/../x", "/var/lib/rig/logs/a b",
                   "/var/lib/rig/logs/"):
        assert jobs.parse_job_dir(answer, day2.LOGS_ROOT) is None
    assert day2.follow_command("svc", "10m", 5, "/var/lib/rig/logs/abcd1234").line == (
        "touch alive; { docker logs --timestamps --since 10m --tail 5 --follow rig-svc 2>&1; } "
        "& c=$!; while kill -0 $c 2>/dev/null; do sleep 5; "
        "[ $(( $(date +%s) - $(stat -c %Y alive 2>/dev/null || echo 0) )) -lt 120 ] "
        "|| { rm -rf -- /var/lib/rig/logs/abcd1234; kill -TERM 0; }; done; wait $c")
    assert jobs.job_poll("/w", 3).line.startswith("cd /w && touch -c alive && ")
    with pytest.raises(ValueError):
        day2.follow_command("svc", None, None, "/tmp/rig-logs-1-2")


def _group_alive(pgid: int) -> bool:
    """Any process of the group that is not a zombie."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _poll(workdir: Path) -> tuple[int | None, bytes]:
    out = subprocess.run(["sh", "-c", jobs.job_poll(str(workdir), 0).line], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    code, _, data = jobs.parse_poll(out)
    return code, data


def test_a_bound_job_lives_while_polled_and_ends_with_its_folder_when_polls_stop(tmp_path):
    work = tmp_path / "job"
    work.mkdir()
    command = jobs.bound_to_follower(Cmd("echo started; sleep 60"), 3,
                                     sh("rm", "-rf", "--", str(work)), every=1)
    subprocess.run(["sh", "-c", jobs.job_start(command, str(work)).line], check=True, timeout=10)
    for _ in range(50):
        if (work / "pid").exists() and (work / "pid").read_text().strip():
            break
        time.sleep(0.1)
    pgid = int((work / "pid").read_text())
    assert pgid > 1
    try:
        until = time.monotonic() + 4.5  # longer than stale_after: the polls keep it alive
        while time.monotonic() < until:
            code, data = _poll(work)
            assert code is None
            time.sleep(0.3)
        assert data == b"started\n" and _group_alive(pgid)
        for _ in range(150):  # no poll any more: stale after 3 s, seen within 1 s more
            if not work.exists() and not _group_alive(pgid):
                break
            time.sleep(0.1)
        assert not work.exists() and not _group_alive(pgid)
    finally:
        if _group_alive(pgid):
            os.killpg(pgid, 9)


def test_a_bound_job_that_ends_by_itself_gives_its_exit_code(tmp_path):
    command = jobs.bound_to_follower(Cmd("echo done; exit 3"), 60, sh("true"), every=1)
    subprocess.run(["sh", "-c", jobs.job_start(command, str(tmp_path)).line], check=True, timeout=10)
    for _ in range(100):
        code, data = _poll(tmp_path)
        if code is not None:
            break
        time.sleep(0.1)
    assert (code, data) == (3, b"done\n")


class FollowSession:
    """What follow_logs asks of a session, answered as a host would; every command kept."""

    def __init__(self, fail_mktemp: tuple[str, ...] = (), ends: dict | None = None):
        self.commands: list[dict[str, str]] = []
        self.followed: list[tuple[str, str, str]] = []
        self.fail_mktemp = fail_mktemp
        self.ends = ends or {}     # host -> what its follow returns

    def shell_all(self, commands, timeout=None):
        self.commands.append({h: str(c) for h, c in commands.items()})
        answers = {}
        for host, command in commands.items():
            if "mktemp" in command and host in self.fail_mktemp:
                answers[host] = Shell(False, "", ["install: cannot change owner"])
            elif "mktemp" in command:
                answers[host] = Shell(True, f"{day2.LOGS_ROOT}/{host}X1\n", [])
            else:
                answers[host] = Shell(True, "", [])
        return answers

    def follow(self, name, command, workdir, on_line, timeout, interval, stop):
        self.followed.append((name, command.line, workdir))
        on_line("2026-11-24T01:00:00Z hello")
        end = self.ends.get(name, (130, []))     # default: stopped by rig (Ctrl-C)
        if isinstance(end, Exception):
            raise end
        return end


def follow_job(fleet, session):
    @contextmanager
    def opened(hosts):
        yield session
    return SimpleNamespace(fleet=fleet, session=opened)


def test_follow_logs_runs_each_host_in_its_own_private_folder_and_removes_it(fleet):
    session, lines = FollowSession(), []
    service = next(iter(fleet.services))
    hosts = fleet.service_hosts(service)
    ops_day2.follow_logs(follow_job(fleet, session), service, None, None, None,
                         lambda host, line: lines.append((host, line)))
    folders = {h: f"{day2.LOGS_ROOT}/{h}X1" for h in hosts}
    assert session.commands[0] == {h: jobs.job_dir_create(day2.LOGS_ROOT).line for h in hosts}
    assert session.followed == [(h, day2.follow_command(service, None, None, folders[h]).line,
                                 folders[h]) for h in hosts]
    assert session.commands[1:] == [{h: f"{{ {jobs.job_stop(w).line}; }}; rm -rf -- {w}"
                                     for h, w in folders.items()}]
    assert lines == [(h, "2026-11-24T01:00:00Z hello") for h in hosts]
    assert not any("/tmp" in c for batch in session.commands for c in batch.values())


def test_follow_logs_names_each_host_whose_stream_ended_early_and_only_those(fleet):
    service = next(s for s in fleet.services if len(fleet.service_hosts(s)) > 1)
    first, second = fleet.service_hosts(service)[:2]
    session = FollowSession(ends={first: (255, ["lost the host while following"]),
                                  second: (130, [])})
    problems = ops_day2.follow_logs(follow_job(fleet, session), service, [first, second], None,
                                    None, lambda host, line: None)
    assert problems == [f"{first}: stopped following (exit 255): lost the host while following"]
    session, lines = FollowSession(ends={first: (0, []), second: RuntimeError("boom")}), []
    problems = ops_day2.follow_logs(follow_job(fleet, session), service, [first, second], None,
                                    None, lambda host, line: lines.append((host, line)))
    assert problems == [f"{second}: stopped following: boom"]
    assert (first, f"-- the log stream of rig-{service} ended (the container was replaced or "
                   "removed); still following the others --") in lines
    session = FollowSession(ends={first: (124, ["still running after 86400 s: stopped"])})
    assert ops_day2.follow_logs(follow_job(fleet, session), service, [first], None, None,
                                lambda host, line: None) == []


def test_a_follower_that_does_not_stop_when_asked_is_named(fleet, monkeypatch):
    import gevent

    service = next(iter(fleet.services))
    host = fleet.service_hosts(service)[0]
    # the 30 s wait for the followers to stop, cut to a moment: they start, and do not stop
    monkeypatch.setattr(gevent, "joinall", lambda greenlets, timeout=None: gevent.sleep(0.05))
    session, stuck = FollowSession(), []

    def frozen(*args):                                   # a host that stopped answering
        stuck.append(gevent.getcurrent())
        gevent.sleep(60)
    session.follow = frozen
    problems = ops_day2.follow_logs(follow_job(fleet, session), service, [host], None, None,
                                    lambda host, line: None)
    assert problems == [f"{host}: stopped following: no answer when asked to stop"]
    gevent.sleep(0)                                      # the kill is delivered: not left behind
    assert len(stuck) == 1 and stuck[0].dead


def test_follow_logs_stops_when_a_host_has_no_folder_and_removes_the_others(fleet):
    service = next(s for s in fleet.services if len(fleet.service_hosts(s)) > 1)
    first, second = fleet.service_hosts(service)[:2]
    session = FollowSession(fail_mktemp=(second,))
    with pytest.raises(RigError, match=f"{second}: could not make a folder for the log job: "
                                       "install: cannot change owner"):
        ops_day2.follow_logs(follow_job(fleet, session), service, [first, second], None, None,
                             lambda host, line: None)
    folder = f"{day2.LOGS_ROOT}/{first}X1"
    assert session.followed == []
    assert session.commands[-1] == {first: f"{{ {jobs.job_stop(folder).line}; }}; rm -rf -- {folder}"}


# -- hooks: a plain environment, and the whole process group at the deadline -----------------------
def test_a_hook_that_leaves_a_child_holding_its_output_is_stopped_at_the_deadline(tmp_path,
                                                                                   monkeypatch):
    """The child kept the pipe open: rig waited the full TIMEOUT, and the child lived on."""
    monkeypatch.setattr(hooks, "TIMEOUT", 1)
    hook(tmp_path, "post-deploy", f"sleep 120 & echo $! >{tmp_path}/child; echo started\n")
    said = []
    started = time.monotonic()
    assert run_hook(tmp_path, "post-deploy", said.append) == 124
    assert time.monotonic() - started < 10
    assert said[0] == "hook post-deploy: started"
    assert said[1].startswith("hook post-deploy: still running after 1 s")
    child = int((tmp_path / "child").read_text())
    for _ in range(50):
        stat = Path(f"/proc/{child}/stat")
        if not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the hook's background child outlived the deadline")


def test_a_hook_sees_a_plain_environment_without_the_specs_credentials(tmp_path, monkeypatch):
    for name, value in {"GHCR_TOKEN": "ghp_x", "HF_TOKEN": "hf_x", "RIG_LAB_REGISTRY_TOKEN": "lab_x",
                        "AWS_SECRET_ACCESS_KEY": "aws_x", "SSH_AUTH_SOCK": "/s",
                        "RIG_DEPLOY_LOG": "d.log", "LC_TIME": "C", "TZ": "UTC",
                        "RIG_OPERATOR": "zoe@ctl"}.items():
        monkeypatch.setenv(name, value)
    hook(tmp_path, "pre-deploy", "env\n")
    said = []
    withheld = set()
    for env in ("production", "lab"):  # what each spec reads credentials from
        withheld |= credential_variables(Job(REPO / "fleet.yml", env).fleet)
    assert withheld == {"GHCR_TOKEN", "HF_TOKEN", "RIG_LAB_REGISTRY_TOKEN"}
    assert run_hook(tmp_path, "pre-deploy", said.append, tag="T", withheld=withheld) == 0
    seen = dict(line.removeprefix("hook pre-deploy: ").split("=", 1) for line in said)
    for name in ("GHCR_TOKEN", "HF_TOKEN", "RIG_LAB_REGISTRY_TOKEN", "AWS_SECRET_ACCESS_KEY",
                 "SSH_AUTH_SOCK"):
        assert name not in seen
    assert {k: seen[k] for k in ("RIG_DEPLOY_LOG", "LC_TIME", "TZ", "RIG_TAG", "RIG_OPERATOR")} \
        == {"RIG_DEPLOY_LOG": "d.log", "LC_TIME": "C", "TZ": "UTC", "RIG_TAG": "T",
            "RIG_OPERATOR": "zoe@ctl"}
    assert seen["PATH"] == os.environ["PATH"]


def test_hook_env_is_an_allow_list(fleet, lab_fleet):
    assert hooks.credential_variables(fleet) == {"GHCR_TOKEN", "HF_TOKEN"}
    assert "RIG_LAB_REGISTRY_TOKEN" in hooks.credential_variables(lab_fleet)
    environ = {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "LC_ALL": "C", "USER": "u",
               "LOGNAME": "u", "TERM": "xterm", "TZ": "UTC", "RIG_X": "1", "RIG_TOKEN": "t",
               "GHCR_TOKEN": "g", "PYTHONPATH": "/p", "LD_PRELOAD": "/l.so", "LANGUAGE": "fr"}
    assert hooks.hook_env(environ, {"RIG_TOKEN", "GHCR_TOKEN"}, RIG_TAG="T") == {
        "PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "LC_ALL": "C", "USER": "u",
        "LOGNAME": "u", "TERM": "xterm", "TZ": "UTC", "RIG_X": "1", "RIG_TAG": "T"}


# -- prune: under the rollout lock --------------------------------------------------------------
class PruneSession:
    def __init__(self, log: list[str], listing: str):
        self.log, self.listing, self.removed = log, listing, {}

    def shell_all(self, commands, timeout=None):
        answers = {}
        for host, command in commands.items():
            if "docker image ls" in command:
                self.log.append(f"list {host}")
                answers[host] = Shell(True, self.listing, [])
            else:
                self.log.append(f"remove {host}")
                self.removed[host] = str(command)
                answers[host] = Shell(True, "", [])
        return answers


def prune_job(monkeypatch, fleet, problems=()):
    log: list[str] = []
    repo = fleet.registry.repository("model_ops_coordinator")
    listing = ("--- images\n"
               f"{repo}\tT1\tsha256:d1\tsha256:i1\t2026-11-21 00:00:00 +0000 UTC\t10MB\n"
               f"{repo}\tT2\tsha256:d2\tsha256:i2\t2026-11-22 00:00:00 +0000 UTC\t10MB\n"
               "--- containers\n")
    session = PruneSession(log, listing)

    class Locks:
        def __init__(self, session_, stale_after, action, tag):
            assert (session_, stale_after, action, tag) == \
                (session, fleet.rollout.lock_stale_after, "prune", "")
            log.append("locks")

        def take(self, break_lock=False):
            log.append(f"take break_lock={break_lock}")
            return list(problems)

        def start_beating(self):
            log.append("beat")

        def release(self):
            log.append("release")
            return []

    class Facts:
        def __init__(self, session_, fleet_, say, action, tag):
            pass

        def facts(self):
            log.append("facts")
            return {h: SimpleNamespace(state={}) for h in fleet.hosts}

    monkeypatch.setattr(ops_day2, "HostLocks", Locks)
    monkeypatch.setattr(ops_day2, "Rollout", Facts)
    return follow_job(fleet, session), session, log


def test_prune_holds_the_rollout_lock_on_every_host_from_reading_to_removing(fleet, monkeypatch):
    job, session, log = prune_job(monkeypatch, fleet)
    hosts = list(fleet.hosts)
    report = ops_day2.prune(job, None, 1, False, lambda *a: None)
    assert log == ["locks", "take break_lock=False", "beat", "facts",
                   *(f"list {h}" for h in hosts), *(f"remove {h}" for h in hosts), "release"]
    repo = fleet.registry.repository("model_ops_coordinator")
    assert set(session.removed.values()) == {f"docker rmi {repo}:T1"}
    assert report.freed == 10_000_000 * len(hosts) and not report.failed


def test_prune_on_a_locked_host_prunes_nothing(fleet, monkeypatch):
    job, session, log = prune_job(monkeypatch, fleet, problems=["pc2: locked by bo@x"])
    with pytest.raises(RigError) as caught:
        ops_day2.prune(job, None, 1, False, lambda *a: None)
    assert caught.value.lines == ["pc2: locked by bo@x", "nothing was pruned"]
    assert log == ["locks", "take break_lock=False", "release"] and session.removed == {}


def test_a_dry_run_prune_takes_no_lock(fleet, monkeypatch):
    job, session, log = prune_job(monkeypatch, fleet)
    report = ops_day2.prune(job, None, 1, True, lambda *a: None)
    assert log == ["facts", *(f"list {h}" for h in fleet.hosts)] and session.removed == {}
    assert all(plan.refs == [f"{fleet.registry.repository('model_ops_coordinator')}:T1"]
               for plan in report.hosts.values())
