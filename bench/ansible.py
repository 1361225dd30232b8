"""The same desired state as `rig bootstrap` (lab overlay, no GPU), for Ansible: an inventory
with each host's rendered files, ansible.cfg (pipelining, ControlPersist, no fact gathering) and a
playbook using only ansible.builtin modules. File contents come from rig's own renderers, so
both tools converge to byte-identical files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import yaml

from rig.commands import host as cmd
from rig.lab.layout import LabPaths
from tasks.profile import profile_files

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  handlers:
    - name: restart docker
      ansible.builtin.systemd_service: {name: docker, state: restarted}
  tasks:
    - name: daemon.json
      ansible.builtin.copy: {dest: /etc/docker/daemon.json, content: "{{ daemon_json }}", mode: "0644"}
      notify: restart docker
    - name: engine packages
      ansible.builtin.apt: {name: "{{ packages }}", state: present, install_recommends: false}
    - name: docker service
      ansible.builtin.systemd_service: {name: docker, enabled: true, state: started}
    - name: registry CA
      ansible.builtin.copy: {dest: "{{ ca_path }}", content: "{{ ca_pem }}", mode: "0644"}
    - name: registry login
      ansible.builtin.shell: >-
        grep -q '"auth": "{{ auth_b64 }}"' /root/.docker/config.json 2>/dev/null && echo same ||
        { printf %s "$RIG_TOKEN" | docker login -u {{ registry_user }} --password-stdin
        {{ registry }} >/dev/null && echo changed; }
      environment: {RIG_TOKEN: "{{ registry_token }}"}
      register: login
      changed_when: "'changed' in login.stdout"
      no_log: true
    - name: docker group
      ansible.builtin.user: {name: ops, groups: docker, append: true}
    - name: machine profile
      ansible.builtin.copy: {dest: "{{ item.key }}", content: "{{ item.value }}", mode: "0644"}
      loop: "{{ profile_files | dict2items }}"
      loop_control: {label: "{{ item.key }}"}
"""


def short_control_dir() -> str:
    """A private, short folder for ControlPath sockets (unix socket paths max ~108 bytes)."""
    import tempfile

    return tempfile.mkdtemp(prefix="rig-ab-", dir="/tmp")


def write(folder: Path, repo: Path, fleet, hosts: dict[str, str], token: str) -> Path:
    """Write ansible.cfg, inventory.yml, vars (token, 0600) and the playbook; return the folder."""
    paths = LabPaths.for_repo(repo)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cp").mkdir(exist_ok=True)
    (folder / "ansible.cfg").write_text(
        "[defaults]\ninventory = inventory.yml\ngathering = explicit\nhost_key_checking = True\n"
        "interpreter_python = /usr/bin/python3\nforks = 20\nretry_files_enabled = False\n"
        "[ssh_connection]\npipelining = True\n"
        f"control_path = {short_control_dir()}/%%C\n"
        f"ssh_args = -o ControlMaster=auto -o ControlPersist=120s -o IdentitiesOnly=yes "
        f"-o UserKnownHostsFile={paths.ssh_dir / 'known_hosts'}\n")
    reg = fleet.registry
    common = {
        "ansible_user": "ops", "ansible_become": True,  # as rig: ops with passwordless sudo
        "ansible_ssh_private_key_file": str(paths.ssh_dir / "id_ed25519"),
        "daemon_json": cmd.daemon_json(fleet.bootstrap.daemon, False),
        "packages": list(cmd.engine_packages(fleet, "debian", "13")),
        "ca_path": f"/etc/docker/certs.d/{reg.host}/ca.crt",
        "ca_pem": fleet.path(reg.ca_file).read_text(),
        "registry": reg.host, "registry_user": reg.username,
    }
    inventory = {"all": {"vars": common, "hosts": {
        name: {"ansible_host": address, "profile_files": profile_files(fleet.profile_of(name))}
        for name, address in hosts.items()}}}
    (folder / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=True))
    secret = folder / "secret.json"
    secret.touch(mode=0o600)
    secret.write_text(json.dumps({  # the token and its login form: a 0600 file, never argv
        "registry_token": token,
        "auth_b64": base64.b64encode(f"{reg.username}:{token}".encode()).decode()}))
    (folder / "bootstrap.yml").write_text(PLAYBOOK)
    return folder


# -- the rollout peer: one service to one host, as a playbook ----------------------------------
ROLLOUT = """\
- hosts: target
  gather_facts: false
  tasks:
    - name: pull by digest
      community.docker.docker_image_pull: {name: "{{ image }}"}
    - name: stop the old container
      community.docker.docker_container: {name: "{{ old }}", state: stopped}
    - name: run the new one, with the flags rig's docker run has
      community.docker.docker_container: "{{ run }}"
    - name: wait for the JSON health answer
      ansible.builtin.uri: {url: "http://127.0.0.1:{{ port }}/health", return_content: true}
      register: health
      until: health.json is defined and health.json.status == 'ok'
      retries: 600
      delay: 0.1
    - name: remove the old container
      community.docker.docker_container: {name: "{{ old }}", state: absent}
"""


def container_params(argv: list[str]) -> dict:
    """rig's `docker run` argv (commands/container.run_argv) as community.docker.docker_container
    parameters: the same name, image, network, user, limits, security and mounts."""
    args = argv[argv.index("run") + 1:]
    image = args.pop()
    params: dict = {"image": image, "state": "started", "detach": True, "pull": "never",
                    "volumes": [], "env": {}, "ulimits": [], "tmpfs": [], "cap_drop": [],
                    "security_opts": [], "labels": {}, "published_ports": []}
    flags = {"--name": "name", "--network": "network_mode", "--restart": "restart_policy",
             "--user": "user", "--stop-timeout": "stop_timeout", "--memory": "memory",
             "--memory-reservation": "memory_reservation", "--shm-size": "shm_size",
             "--pids-limit": "pids_limit", "--cpus": "cpus", "--env-file": "env_file"}
    lists = {"--tmpfs": "tmpfs", "--cap-drop": "cap_drop", "--security-opt": "security_opts",
             "-v": "volumes", "-p": "published_ports"}
    i = 0
    while i < len(args):
        flag = args[i]
        if flag == "-d":
            i += 1
            continue
        if flag == "--read-only":
            params["read_only"] = True
            i += 1
            continue
        value = args[i + 1]
        if flag in flags:
            params[flags[flag]] = value
        elif flag in lists:
            params[lists[flag]].append(value)
        elif flag == "--ulimit":
            name, limits = value.split("=", 1)
            soft, _, hard = limits.partition(":")
            params["ulimits"].append(f"{name}:{soft}:{hard or soft}")
        elif flag == "-e":
            key, _, val = value.partition("=")
            params["env"][key] = val
        elif flag == "--label":
            key, _, val = value.partition("=")
            params["labels"][key] = val
        elif flag == "--gpus":
            params["device_requests"] = [{"driver": "nvidia", "count": -1,
                                          "capabilities": [["gpu"]]}]
        else:
            raise SystemExit(f"bench: rig's docker run has {flag}, which the Ansible peer does not "
                             "map yet (bench/ansible.py container_params)")
        i += 2
    for key in ("stop_timeout", "pids_limit"):
        params[key] = int(params[key])
    params["cpus"] = float(params["cpus"])
    return params


def write_rollout(folder: Path, repo: Path, address: str) -> Path:
    """ansible.cfg and the inventory for one target host, and the rollout playbook; the run's
    variables (image, old, run, port) come per run as a JSON file."""
    paths = LabPaths.for_repo(repo)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ansible.cfg").write_text(
        "[defaults]\ninventory = inventory.yml\ngathering = explicit\nhost_key_checking = True\n"
        "interpreter_python = /usr/bin/python3\nretry_files_enabled = False\n"
        "[ssh_connection]\npipelining = True\n"
        f"control_path = {short_control_dir()}/%%C\n"
        f"ssh_args = -o ControlMaster=auto -o ControlPersist=120s -o IdentitiesOnly=yes "
        f"-o UserKnownHostsFile={paths.ssh_dir / 'known_hosts'}\n")
    inventory = {"all": {"hosts": {"target": {
        "ansible_host": address, "ansible_user": "ops", "ansible_become": True,
        "ansible_ssh_private_key_file": str(paths.ssh_dir / "id_ed25519")}}}}
    (folder / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=True))
    (folder / "rollout.yml").write_text(ROLLOUT)
    return folder
