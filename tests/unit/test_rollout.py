"""Rollout logic without hosts: waves, the health gate's judgement, container commands, the
ledger and state documents, the facts parser."""

import base64
import json
from pathlib import Path

import pytest

from rig.commands import container as cmd
from rig.config.images import HealthSpec
from rig.errors import RigError
from rig.ledger import entry, next_state
from rig.plan import parse_batch, waves
from rig.rollout.engine import host_problems
from rig.rollout.gate import GateJudge, Probe, parse_probe
from rig.rollout.locks import describe_lock
from tasks.rollout import RolloutFacts, needs_restore, parse_rollout_facts

REPO = Path(__file__).resolve().parents[2]


def eight_host_fleet(fleet):
    hosts = {f"n{i}": fleet.hosts["pc2"] for i in range(1, 8)}
    return fleet.model_copy(update={"hosts": {"mainpc": fleet.hosts["mainpc"], **hosts}})


# -- waves --------------------------------------------------------------------------------------
def test_canary_then_batches_of_one(fleet):
    assert waves(fleet, ["pc2", "mainpc"]) == [["mainpc"], ["pc2"]]


def test_batch_count_and_share_over_eight_hosts(fleet):
    big = eight_host_fleet(fleet)
    hosts = list(big.hosts)
    assert waves(big, hosts, batch=2) == [["mainpc"], ["n1", "n2"], ["n3", "n4"], ["n5", "n6"], ["n7"]]
    assert waves(big, hosts, batch="50%") == [["mainpc"], ["n1", "n2", "n3"], ["n4", "n5", "n6"], ["n7"]]
    assert waves(big, hosts, batch="1%") == [["mainpc"]] + [[f"n{i}"] for i in range(1, 8)]


def test_canary_override_and_untargeted_canary(fleet):
    assert waves(fleet, ["mainpc", "pc2"], canary=["pc2"]) == [["pc2"], ["mainpc"]]
    assert waves(fleet, ["pc2"]) == [["pc2"]]  # canary not targeted: the first host is
    with pytest.raises(RigError, match="--canary: unknown host nope"):
        waves(fleet, ["pc2"], canary=["nope"])


def test_batch_option_parsing():
    assert parse_batch("2") == 2 and parse_batch("25%") == "25%" and parse_batch(None) is None
    for bad in ("0", "x", "150%", "-1"):
        with pytest.raises(RigError, match="--batch"):
            parse_batch(bad)


# -- the health gate --------------------------------------------------------------------------
HEALTH = HealthSpec(path="/health", expect={"status": "ok"}, start_period=5, interval=0.5,
                    timeout=1, retries=3)
OK = '{"status": "ok", "service": "x"}'


def run_gate(probes, min_healthy=2.0):
    judge = GateJudge(HEALTH, min_healthy)
    for probe in probes:
        verdict = judge.feed(probe)
        if verdict:
            return verdict, probe.t
    return None, None


def test_passes_after_min_healthy_of_good_answers():
    probes = [Probe(t / 2, "running", 0, 200, OK) for t in range(10)]
    verdict, at = run_gate(probes)
    assert verdict.passed and at == 2.0


def test_a_failure_restarts_the_min_healthy_clock():
    probes = [Probe(0, "running", 0, 200, OK), Probe(1.5, "running", 0, 503, '{"status": "starting"}'),
              *[Probe(2 + t / 2, "running", 0, 200, OK) for t in range(8)]]
    verdict, at = run_gate(probes)
    assert verdict.passed and at == 4.0


def test_starting_answers_within_start_period_do_not_count():
    starting = [Probe(t / 2, "running", 0, 503, '{"status": "starting"}') for t in range(8)]
    good = [Probe(4 + t / 2, "running", 0, 200, OK) for t in range(6)]
    verdict, _ = run_gate(starting + good)
    assert verdict.passed


def test_degraded_200_fails_even_during_start_period():
    degraded = [Probe(t / 2, "running", 0, 200, '{"status": "degraded"}') for t in range(10)]
    verdict, at = run_gate(degraded)
    assert not verdict.passed and at == 1.0
    assert verdict.answer == '200 {"status": "degraded"}'
    assert verdict.reason == "unhealthy 3 times in a row"


def test_exited_container_fails_at_once():
    verdict, at = run_gate([Probe(0.0, "running", 0, 0, ""), Probe(0.5, "exited", 3, 0, "")])
    assert not verdict.passed and at == 0.5
    assert verdict.reason == "container exited (exit code 3)" and verdict.answer == "no answer"


def test_restarted_container_fails_at_once():
    verdict, _ = run_gate([Probe(0.0, "running", 3, 0, "", restarts=1)])
    assert verdict.reason == "container exited at start (docker restarted it 1 times)"


def test_no_answer_after_start_period_fails_after_retries():
    probes = [Probe(t / 2, "running", 0, 0, "") for t in range(20)]
    verdict, at = run_gate(probes)
    assert not verdict.passed and at == 6.0  # 5.0, 5.5, 6.0


def test_probe_lines_from_the_host():
    body = base64.b64encode(b'{"status": "ok"}').decode()
    probe = parse_probe(f"probe 1700000000.5 running:0:0 200 {body}", 1700000000.0)
    assert probe == Probe(0.5, "running", 0, 200, '{"status": "ok"}')
    assert parse_probe("probe 1700000000.5 missing:0:0 000 ", 1700000000.0).code == 0
    assert parse_probe("probe 1700000000.5 running:3:2 000 ", 1700000000.0).restarts == 2
    assert parse_probe("garbage", 0) is None


# -- commands -----------------------------------------------------------------------------------
RELEASE = cmd.Release("model_ops_coordinator", "T1-mainpc", "10.77.0.1:5000/rig/model_ops_coordinator",
                      "sha256:" + "a" * 64, "f" * 64)


def test_run_argv_for_a_gpu_service(fleet, lab_fleet):
    argv = cmd.run_argv(fleet, "mainpc", RELEASE, "b")
    assert argv == [
        "docker", "run", "-d", "--name", "rig-model_ops_coordinator", "--network", "rig",
        "-p", "127.0.0.1:28212:8212", "--restart", "unless-stopped", "--user", "10001:10001",
        "--stop-timeout", "10",
        "--memory", str(12 * 2**30), "--memory-reservation", str(512 * 2**20),
        "--shm-size", str(2 * 2**30), "--pids-limit", "512", "--cpus", "8",
        "--ulimit", "memlock=-1:-1", "--ulimit", "nofile=65536:65536",
        "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "-v", "rig-model-cache:/cache", "-v", "rig-logs:/logs",
        "--env-file", "/etc/rig/machine.env",
        "-v", "/etc/rig/machine-profile.json:/etc/rig/machine-profile.json:ro",
        "-e", "HF_HOME=/cache/huggingface", "-e", "RIG_LOG_DIR=/logs",
        "-e", "RIG_MODEL_CACHE=/cache", "-e", "TORCH_HOME=/cache/torch",
        "-v", "/etc/rig/secrets/model_ops_coordinator/HF_TOKEN:/run/secrets/HF_TOKEN:ro",
        "--gpus", "all",
        "--label", "rig.service=model_ops_coordinator", "--label", "rig.tag=T1-mainpc",
        "--label", "rig.digest=sha256:" + "a" * 64, "--label", "rig.profile-hash=" + "f" * 64,
        "--label", "rig.slot=b", "--label", "rig.port=28212",
        "10.77.0.1:5000/rig/model_ops_coordinator@sha256:" + "a" * 64,
    ]
    assert "--gpus" not in cmd.run_argv(lab_fleet, "mainpc", RELEASE)  # NVIDIA disabled in the lab


def test_without_the_proxy_a_service_runs_on_the_host_network(fleet):
    direct = fleet.model_copy(update={"proxy": fleet.proxy.model_copy(update={"enabled": False})})
    argv = cmd.run_argv(direct, "mainpc", RELEASE, "b")
    assert argv[5:8] == ["--network", "host", "--restart"]
    assert not [a for a in argv if a.startswith("rig.slot") or a.startswith("rig.port")]


def _release(fleet, host, service, secrets=None):
    config = cmd.container_config(fleet, host, service, "sha256:1", "ph", secrets or {})
    return cmd.Release(service, "T1", f"reg/{service}", "sha256:1", "ph", config)


def _flag(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_a_service_without_a_gpu_sees_none_on_a_gpu_host(fleet):
    """nvidia is the default runtime on GPU hosts and CUDA images set NVIDIA_VISIBLE_DEVICES=all:
    a gpus: none service gets `void` (recorded from the real fleet's mainpc; no GPU here)."""
    argv = cmd.run_argv(fleet, "mainpc", _release(fleet, "mainpc", "affective_processing_center"))
    assert "--gpus" not in argv
    assert "NVIDIA_VISIBLE_DEVICES=void" in _flag(argv, "-e")


def test_a_device_list_exposes_only_those_devices(fleet):
    """pc2's by_profile gives the audio pipeline gpus: [0]; mainpc's gets all of them."""
    argv = cmd.run_argv(fleet, "pc2", _release(fleet, "pc2", "real_time_audio_pipeline"))
    assert _flag(argv, "--gpus") == ['"device=0"']
    assert "NVIDIA_VISIBLE_DEVICES=0" in _flag(argv, "-e")
    assert cmd.sh(*argv).line.count("""--gpus '"device=0"'""") == 1  # CSV-quoted for docker
    spec = fleet.services["real_time_audio_pipeline"]
    two = fleet.model_copy(update={"services": {**fleet.services, "real_time_audio_pipeline":
        spec.model_copy(update={"by_profile": {"pc2": spec.by_profile["pc2"].model_copy(
            update={"gpus": [1, 3]})}})}})
    argv = cmd.run_argv(two, "pc2", _release(two, "pc2", "real_time_audio_pipeline"))
    assert _flag(argv, "--gpus") == ['"device=1,3"']
    assert "NVIDIA_VISIBLE_DEVICES=1,3" in _flag(argv, "-e")
    main = cmd.run_argv(fleet, "mainpc", _release(fleet, "mainpc", "real_time_audio_pipeline"))
    assert _flag(main, "--gpus") == ["all"] and not any("NVIDIA" in e for e in _flag(main, "-e"))


def test_pc2_gets_its_own_limits(fleet):
    main = cmd.run_argv(fleet, "mainpc", _release(fleet, "mainpc", "model_ops_coordinator"))
    pc2 = cmd.run_argv(fleet, "pc2", _release(fleet, "pc2", "model_ops_coordinator"))
    assert (_flag(main, "--memory"), _flag(pc2, "--memory")) == ([str(12 * 2**30)], [str(6 * 2**30)])
    assert (_flag(main, "--cpus"), _flag(pc2, "--cpus")) == (["8"], ["4"])
    assert (_flag(main, "--shm-size"), _flag(pc2, "--shm-size")) == ([str(2**31)], [str(2**30)])
    assert _flag(pc2, "--stop-timeout") == ["10"]
    audio = cmd.run_argv(fleet, "pc2", _release(fleet, "pc2", "real_time_audio_pipeline"))
    assert _flag(audio, "--stop-timeout") == ["5"]  # the service's own stop_timeout


def test_config_labels_and_changes_say_what_differs_not_the_secret(fleet):
    old = _release(fleet, "pc2", "model_ops_coordinator", {"HF_TOKEN": "aaaa"})
    argv = cmd.run_argv(fleet, "pc2", old)
    labels = dict(label.split("=", 1) for label in _flag(argv, "--label"))
    assert labels["rig.config-hash"] == old.config_hash and len(old.config_hash) == 16
    assert json.loads(labels["rig.config"])["secret HF_TOKEN"] == "aaaa"  # the hash we passed
    bigger = fleet.services["model_ops_coordinator"].by_profile["pc2"].model_copy(
        update={"memory": 12 * 2**30})
    spec = fleet.services["model_ops_coordinator"].model_copy(update={"by_profile": {"pc2": bigger}})
    changed = fleet.model_copy(update={"services": {**fleet.services, "model_ops_coordinator": spec}})
    new = _release(changed, "pc2", "model_ops_coordinator", {"HF_TOKEN": "bbbb"})
    assert cmd.config_changes(old.config, new.config) == ["memory 6g -> 12g", "secret HF_TOKEN rotated"]
    assert cmd.config_changes(old.config, old.config) == []
    assert cmd.config_changes("", new.config) == ["settings (not labelled by this rig version)"]
    value = "hf_secret_value_123"
    hashed = cmd.secret_hash("model_ops_coordinator", "HF_TOKEN", value)
    assert value not in hashed and hashed != cmd.secret_hash("other", "HF_TOKEN", value)


def test_write_secret_reads_the_value_from_stdin():
    line = cmd.write_secret("svc", "API_KEY").line
    assert line == (
        "install -d -m 0700 -o root -g root /etc/rig/secrets /etc/rig/secrets/svc && "
        "( umask 077; base64 -d > /etc/rig/secrets/svc/API_KEY.new ) && "
        "chown 10001:10001 /etc/rig/secrets/svc/API_KEY.new && "
        "chmod 0400 /etc/rig/secrets/svc/API_KEY.new && "
        "mv -f /etc/rig/secrets/svc/API_KEY.new /etc/rig/secrets/svc/API_KEY")


def test_replace_keeps_the_old_container_stopped(fleet):
    swap = cmd.swap_command(fleet, "mainpc", RELEASE, has_current=True, has_previous=True)
    assert swap.startswith(                 # one round trip; its image is pulled before
        "docker rm -f rig-model_ops_coordinator-prev && "
        "docker stop -t 10 rig-model_ops_coordinator && "
        "docker rename rig-model_ops_coordinator rig-model_ops_coordinator-prev && "
        "docker run -d --name rig-model_ops_coordinator ")
    assert swap.line.count(" && ") == 3 and swap.compound and "docker pull" not in swap.line
    first = cmd.swap_command(fleet, "mainpc", RELEASE, has_current=False, has_previous=False)
    assert first.startswith("docker run -d --name rig-model_ops_coordinator ")


def test_a_swap_undone_puts_the_kept_container_back_and_the_proxy_on_it():
    s = "model_ops_coordinator"
    assert cmd.undo_swap(s, kept=True, proxied=True).line == (
        f"{{ docker rm -f rig-{s} >/dev/null 2>&1 || true; }} && docker rename rig-{s}-prev "
        f"rig-{s} && docker start rig-{s} && "
        + cmd.switch_to_current(s, 0, None).line)
    assert cmd.undo_swap(s, kept=True, proxied=False).line == (
        f"{{ docker rm -f rig-{s} >/dev/null 2>&1 || true; }} && docker rename rig-{s}-prev "
        f"rig-{s} && docker start rig-{s}")
    assert cmd.undo_swap(s, kept=False, proxied=True).line == (   # nothing ran before it
        f"docker rm -f rig-{s} >/dev/null 2>&1 || true")


def test_several_pulls_run_at_once_and_any_failure_fails_them(tmp_path):
    import subprocess

    line = cmd.pull_all(["r/a@sha256:1", "r/b@sha256:2"])
    assert line == ("sh -c 'rc=0; pids=\"\"; for ref in \"$@\"; do docker pull -q \"$ref\" "
                    ">/dev/null & pids=\"$pids $!\"; done; for pid in $pids; do wait \"$pid\" || "
                    "rc=1; done; exit $rc' pull r/a@sha256:1 r/b@sha256:2")
    fake = tmp_path / "docker"   # a docker whose pull of anything with "bad" in it fails, slowly
    fake.write_text('#!/bin/sh\nsleep 0.3\ncase "$3" in *bad*) echo "no such $3" >&2; exit 1;; esac\n'
                    'echo "$3" >> "$(dirname "$0")/pulled"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    good = subprocess.run(["sh", "-c", cmd.pull_all(["r/a", "r/b", "r/c"])], env=env,
                          capture_output=True, text=True, timeout=10)
    assert good.returncode == 0
    assert sorted((tmp_path / "pulled").read_text().split()) == ["r/a", "r/b", "r/c"]
    bad = subprocess.run(["sh", "-c", cmd.pull_all(["r/a", "r/bad", "r/c"])], env=env,
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 1 and bad.stderr == "no such r/bad\n"


def test_restore_commands():
    assert cmd.restore_commands("svc", True) == [
        "docker rm -f rig-svc >/dev/null 2>&1 || true",
        "docker rename rig-svc-prev rig-svc && docker start rig-svc"]
    assert cmd.restore_commands("svc", False) == ["docker rm -f rig-svc >/dev/null 2>&1 || true"]


# -- facts, ledger, state -------------------------------------------------------------------------
FACT_LINES = [
    "--- docker", "active", "--- profile", "f" * 64, "--- containers",
    "rig-svc\trunning\tsvc\tT1\tsha256:1\t" + "f" * 64,
    "rig-svc-prev\texited\tsvc\tT0\tsha256:0\t" + "f" * 64,
    "--- state", '{"svc": {"tag": "T1", "digest": "sha256:1"}}', "--- lock",
]


def test_rollout_facts_parse():
    facts = parse_rollout_facts(FACT_LINES)
    assert facts.docker_active and facts.profile_hash == "f" * 64
    assert facts.running("svc").digest == "sha256:1" and facts.running("other") is None
    assert facts.state == {"svc": {"tag": "T1", "digest": "sha256:1"}} and facts.lock is None


def test_needs_restore_only_when_off_the_previous_version():
    facts = parse_rollout_facts(FACT_LINES)
    assert not needs_restore(facts, "svc", {"tag": "T1", "digest": "sha256:1"}, proxied=False)
    assert needs_restore(facts, "svc", {"tag": "T0", "digest": "sha256:0"}, proxied=False)
    assert needs_restore(facts, "svc", None, proxied=False)  # first rollout: the new container must go
    assert not needs_restore(RolloutFacts(), "svc", None, proxied=False)


def test_host_problems_before_any_change(lab_fleet):
    good = lab_fleet.profile_of("mainpc").content_hash()
    facts = {"mainpc": RolloutFacts(docker_active=True, profile_hash=good),
             "pc2": RolloutFacts(docker_active=False, profile_hash=None,
                                 lock={"operator": "bo@x", "since": 100, "pid": 7})}
    problems = host_problems(lab_fleet, facts, break_lock=False, now=200)
    assert problems[0] == "pc2: the Docker engine is not running (run `rig bootstrap`)"
    assert problems[1] == "pc2: machine profile missing (run `rig bootstrap`)"
    assert problems[2].startswith("pc2: locked by bo@x since 1970-01-01 00:01:40 UTC")
    assert "--break-lock refuses" in host_problems(lab_fleet, facts, break_lock=True, now=200)[2]
    assert len(host_problems(lab_fleet, facts, break_lock=True, now=100 + 3601)) == 2  # stale


def test_ledger_entry_and_next_state():
    e = entry("2026-11-23T00:00:00Z", "ops@ctl", "rollout", "mainpc", RELEASE,
              {"tag": "T0-mainpc", "digest": "sha256:0"}, "ok")
    assert e == {"time": "2026-11-23T00:00:00Z", "operator": "ops@ctl", "action": "rollout",
                 "host": "mainpc", "service": "model_ops_coordinator", "tag": "T1-mainpc",
                 "digest": RELEASE.digest, "previous_tag": "T0-mainpc",
                 "previous_digest": "sha256:0", "profile_hash": "f" * 64, "config_hash": None,
                 "result": "ok"}
    state = {"model_ops_coordinator": {"tag": "T0-mainpc", "digest": "sha256:0"}}
    new = next_state(state, [e])
    assert new["model_ops_coordinator"]["previous"] == {"tag": "T0-mainpc", "digest": "sha256:0"}
    assert new["model_ops_coordinator"]["digest"] == RELEASE.digest
    assert next_state(state, [{**e, "result": "failed"}]) == state
    assert "token" not in json.dumps(new).lower()


def test_one_probe_is_one_line_of_state_code_and_body():
    probe = cmd.probe_once("svc", 6560, "/health", 2)
    assert probe == (
        "s=$(docker inspect -f '{{.State.Status}}:{{.State.ExitCode}}:{{.RestartCount}} "
        "{{index .Config.Labels \"rig.port\"}}' rig-svc 2>/dev/null | head -n 1); p=${s#* }; "
        "s=${s%% *}; case \"$p\" in *[!0-9]*) p= ;; esac; [ -n \"$s\" ] || s=missing:0:0; "
        "f=$(mktemp); c=$(curl -s -o \"$f\" -m 2 -w '%{http_code}' "
        "\"http://127.0.0.1:${p:-6560}\"/health || true); "
        "echo \"probe $(date +%s.%N) $s $c $(head -c 4096 \"$f\" | base64 -w0)\"; rm -f \"$f\"")


@pytest.mark.parametrize("inspect, url", [
    ("running:0:0 28212", "http://127.0.0.1:28212/health"),      # behind the proxy: its slot
    ("running:0:0 <no value>", "http://127.0.0.1:6560/health"),  # no label: the host network
    ("running:0:0 12;rm", "http://127.0.0.1:6560/health"),       # a label that is no port
    ("", "http://127.0.0.1:6560/health"),                         # no container
])
def test_a_probe_asks_the_container_on_the_port_its_label_names(tmp_path, inspect, url):
    """Run for real in sh, with docker and curl stand-ins: the probe goes to the slot port the
    container was published on (rig.port), never to the proxy in front of it."""
    import base64
    import subprocess

    (tmp_path / "docker").write_text(f"#!/bin/sh\n[ -n '{inspect}' ] && echo '{inspect}'\n")
    (tmp_path / "curl").write_text('#!/bin/sh\nwhile [ $# -gt 1 ]; do [ "$1" = -o ] && o=$2; '
                                   'shift; done; printf %s "$1" > "$o"; printf 200\n')
    for name in ("docker", "curl"):
        (tmp_path / name).chmod(0o755)
    out = subprocess.run(["sh", "-c", cmd.probe_once("svc", 6560, "/health", 2)],
                         capture_output=True, text=True, check=True,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout.split()
    assert out[2] == (inspect.split()[0] if inspect else "missing:0:0")
    assert (out[3], base64.b64decode(out[4]).decode()) == ("200", url)


def test_a_paused_rollouts_lock_says_what_to_run_not_dead_or_stale():
    lock = {"operator": "ops@ctl", "since": 1, "heartbeat": 1, "pid": 999999, "machine": "here",
            "tag": "T2", "paused": True, "paused_since": 1_763_000_000}
    text = describe_lock(lock, stale_after=60, now=1_800_000_000, machine="here",
                         alive=lambda pid: False)
    assert text == ("paused rollout T2 by ops@ctl since 2025-11-13 02:13:20 UTC, after its canary: "
                    "`rig promote` continues it, `rig abort` rolls the canary back")


# -- secrets, one file per version ----------------------------------------------------------------
def test_each_secret_version_has_its_own_file_and_the_container_mounts_its_own(fleet):
    hashes = {"HF_TOKEN": cmd.secret_hash("model_ops_coordinator", "HF_TOKEN", "v1")}
    config = cmd.container_config(fleet, "mainpc", "model_ops_coordinator", RELEASE.digest,
                                  "f" * 64, hashes)
    release = cmd.Release(RELEASE.service, RELEASE.tag, RELEASE.repository, RELEASE.digest,
                          "f" * 64, config)
    assert release.secret_versions == hashes
    path = f"/etc/rig/secrets/model_ops_coordinator/HF_TOKEN@{hashes['HF_TOKEN']}"
    argv = cmd.run_argv(fleet, "mainpc", release)
    assert f"{path}:/run/secrets/HF_TOKEN:ro" in argv
    line = cmd.write_secret("model_ops_coordinator", "HF_TOKEN", hashes["HF_TOKEN"]).line
    assert line.endswith(f"mv -f {path}.new {path}")
    rotated = {"HF_TOKEN": cmd.secret_hash("model_ops_coordinator", "HF_TOKEN", "v2")}
    assert cmd.secret_path("model_ops_coordinator", "HF_TOKEN", rotated["HF_TOKEN"]) != path


def test_secrets_gc_keeps_what_containers_mount_and_removes_the_rest(tmp_path):
    """Run for real by sh, with a `docker` stand-in that lists two containers' mounts."""
    import subprocess

    root = tmp_path / "secrets"
    for name in ("a/HF_TOKEN@v1", "a/HF_TOKEN@v2", "a/HF_TOKEN@v3.new", "gone/KEY@v1", "b/X@v1"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mounts = {"c1": [f"{root}/a/HF_TOKEN@v2", "/etc/rig/machine-profile.json"],
              "c2": [f"{root}/b/X@v1"]}
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\n"
                      'if [ "$1" = ps ]; then echo c1; echo c2; exit 0; fi\n'
                      + "".join(f'[ "$4" = {c} ] && printf "%s\\n" {" ".join(m)}\n'
                                for c, m in mounts.items()) + "exit 0\n")
    docker.chmod(0o755)
    line = cmd.secrets_gc().line.replace("/etc/rig/secrets", str(root))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(["sh", "-c", line], check=True, env=env, timeout=30)
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert left == ["a/HF_TOKEN@v2", "a/HF_TOKEN@v3.new", "b/X@v1"]
    assert not (root / "gone").exists()
    docker.write_text("#!/bin/sh\nexit 1\n")   # the engine does not answer: nothing goes
    subprocess.run(["sh", "-c", line], check=True, env=env, timeout=30)
    assert len([p for p in root.rglob("*") if p.is_file()]) == 3
    docker.write_text(f"#!/bin/sh\necho asked >>{tmp_path}/asked\nexit 0\n")
    subprocess.run(["sh", "-c", line], check=True, env=env, timeout=30)
    assert (tmp_path / "asked").read_text() == "asked\n"     # secrets there: the engine asked
    empty = cmd.secrets_gc().line.replace("/etc/rig/secrets", str(tmp_path / "none"))
    subprocess.run(["sh", "-c", empty], check=True, env=env, timeout=30)
    assert (tmp_path / "asked").read_text() == "asked\n"     # no secrets: not asked again


def test_the_record_step_is_one_line_that_runs_every_part_and_fails_if_one_did(tmp_path):
    """Run for real by sh, with /var/lib/rig and /etc/rig/secrets in a temporary folder and a
    `docker` stand-in that logs its calls and finds one of two kept containers."""
    import json as _json
    import subprocess

    state_dir, secrets = tmp_path / "state", tmp_path / "secrets"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    calls = tmp_path / "calls"
    docker.write_text("#!/bin/sh\n"
                      f'echo "$@" >>{calls}\n'
                      'case "$1 $*" in ps*"name=^/?rig-a-prev\\$"*) echo id-a ;; esac\n'
                      'if [ "$1" = rm ] && [ -e "$0.fail" ]; then exit 1; fi\n'
                      "exit 0\n")
    docker.chmod(0o755)
    entries = [{"service": "a", "result": "ok"}]
    state = {"a": {"tag": "T2"}}

    def run(finished, entries, state):
        line = cmd.record_command(finished, entries, state).line
        line = line.replace(cmd.STATE_DIR, str(state_dir)).replace("/etc/rig/secrets", str(secrets))
        return subprocess.run(["sh", "-c", line], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=30)
    done = run(["a", "b"], entries, state)
    assert done.returncode == 0, done.stderr
    assert "rm -f id-a" in calls.read_text()                   # only the kept one that is there
    assert "name=^/?rig-b-prev$" in calls.read_text()
    assert _json.loads((state_dir / "ledger.jsonl").read_text()) == entries[0]
    assert _json.loads((state_dir / "state.json").read_text()) == state
    (bin_dir / "docker.fail").write_text("")                    # the removal fails ...
    failed = run(["a"], [{"service": "a", "result": "ok", "n": 2}], {"a": {"tag": "T3"}})
    assert failed.returncode == 1                               # ... and the line says so,
    assert len((state_dir / "ledger.jsonl").read_text().splitlines()) == 2   # but recorded
    assert _json.loads((state_dir / "state.json").read_text()) == {"a": {"tag": "T3"}}
    calls.write_text("")
    nothing = run([], [], None)          # a host with nothing finished or recorded: the gc only
    assert nothing.returncode == 0 and calls.read_text() == ""     # no secrets: no docker
    assert len((state_dir / "ledger.jsonl").read_text().splitlines()) == 2
    (state_dir / "state.json").write_bytes(b"\xff{torn")          # unreadable: a repair
    repaired = run([], [], {"a": {"tag": "T3"}})
    assert repaired.returncode == 0, repaired.stderr
    assert _json.loads((state_dir / "state.json").read_text()) == {"a": {"tag": "T3"}}
    assert len((state_dir / "ledger.jsonl").read_text().splitlines()) == 2   # no ledger line


def test_a_service_name_ending_in_prev_is_refused_with_its_line(tmp_path):
    import shutil

    from rig.config import load_fleet

    for name in ("fleet.yml", "profiles", "dockerfiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    text = (tmp_path / "fleet.yml").read_text()
    text = text.replace("  affective_processing_center:", "  affective_processing_center-prev:", 1)
    (tmp_path / "fleet.yml").write_text(text)
    with pytest.raises(RigError) as caught:
        load_fleet(tmp_path / "fleet.yml")
    line = next(x for x in caught.value.lines if "-prev" in x)
    number = text.splitlines().index("  affective_processing_center-prev:") + 1
    assert line == (f"{tmp_path / 'fleet.yml'}:{number}: services.affective_processing_center-prev: "
                    "service name 'affective_processing_center-prev' ends in '-prev', which names "
                    "the kept container of service 'affective_processing_center' "
                    "(rig-affective_processing_center-prev); choose another name")


def test_a_service_named_unreadable_keeps_its_state_and_a_garbled_probe_is_no_probe():
    facts = parse_rollout_facts(["--- state", '{"unreadable": {"tag": "T1", "digest": "sha256:1"}}'])
    assert facts.state == {"unreadable": {"tag": "T1", "digest": "sha256:1"}} and not facts.warnings
    assert parse_probe("probe 5 running:x:0 200", 0.0) is None
    assert parse_probe("probe 5 running:0:y 200", 0.0) is None
