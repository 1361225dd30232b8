#!/usr/bin/python3
"""rig lab stand-in for nvidia-smi: lab hosts have no GPU, rig still asks them what nvidia-smi says.

rig copies this file to /usr/local/bin/nvidia-smi on lab hosts. It answers exactly the three
invocations rig makes (rig/gpu/smi.py: GPU_QUERY, APPS_QUERY, HEADER_QUERY), in the format the
real nvidia-smi prints (tests/unit/fixtures/gpu/smi-*.txt), from the state in
/etc/rig-lab/gpu.json (RIG_LAB_GPU_STATE overrides the path), which rig/lab/gpu.py writes:

    {"name": "NVIDIA GeForce RTX 4090", "uuid": "GPU-...", "memory_mib": 24564,
     "compute_cap": "8.9", "driver": "535.129.03", "cuda": "12.2", "used_mib": 0,
     "missing": false, "apps": [{"pid": 4242, "name": "other-job", "used_mib": 3000}]}

memory.used is used_mib plus the apps' memory. With "missing": true it prints nvidia-smi's
no-driver message and exits 9, as nvidia-smi(1) documents ("Return code 9 - NVIDIA driver is not
loaded"). Any other arguments: a message on stderr, exit 2 ("A supplied argument or flag is
invalid"). Standard library only: it runs on the lab host's /usr/bin/python3, without rig.
"""

import json
import os
import sys
import time

STATE_PATH = "/etc/rig-lab/gpu.json"

GPU_QUERY = ["--query-gpu=index,uuid,name,compute_cap,memory.total,memory.used,driver_version",
             "--format=csv,noheader,nounits"]
APPS_QUERY = ["--query-compute-apps=gpu_uuid,pid,process_name,used_memory",
              "--format=csv,noheader,nounits"]
HEADER_QUERY = []

NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
             "Make sure that the latest NVIDIA driver is installed and running.")

WIDTH = 89  # the table of the 535 driver branch, the branch the lab stands in for
BORDER = "+" + "-" * (WIDTH - 2) + "+"
CELLS = "+" + "-" * 41 + "+" + "-" * 22 + "+" + "-" * 22 + "+"


def load_state(path):
    with open(path, encoding="utf-8") as handle:
        state = json.load(handle)
    if not isinstance(state, dict):
        raise ValueError("the state is not a JSON object")
    return state


def apps_of(state):
    apps = state.get("apps") or []
    return [app for app in apps if isinstance(app, dict)]


def memory_used(state):
    return int(state.get("used_mib") or 0) + sum(int(app.get("used_mib") or 0)
                                                 for app in apps_of(state))


def gpu_lines(state):
    values = ["0", state["uuid"], state["name"], state["compute_cap"], str(state["memory_mib"]),
              str(memory_used(state)), state["driver"]]
    return [", ".join(values)]


def app_lines(state):
    return [f"{state['uuid']}, {int(app['pid'])}, {app['name']}, {int(app.get('used_mib') or 0)}"
            for app in apps_of(state)]


def _name(name, width):
    return name if len(name) <= width else name[: width - 3] + "..."


def _process_name(name):
    return name if len(name) <= 38 else "..." + name[-35:]


def row(*cells):
    """A table line from its cells' text: "|cell|cell|...|"."""
    return "|" + "|".join(cells) + "|"


def table_lines(state, now=None):
    """The plain `nvidia-smi` table, laid out as driver 535 prints it."""
    stamp = time.localtime(now)
    driver, cuda = state["driver"], state.get("cuda") or "N/A"
    used, total = memory_used(state), int(state["memory_mib"])
    lines = [
        time.strftime("%a %b ", stamp) + f"{stamp.tm_mday:2d}" + time.strftime(" %H:%M:%S %Y", stamp)
        + " " * 7,
        BORDER,
        row(f" NVIDIA-SMI {driver:<23}Driver Version: {driver:<13}CUDA Version: {cuda:<9}"),
        "|" + "-" * 41 + "+" + "-" * 22 + "+" + "-" * 22 + "+",
        row(" GPU  Name                 Persistence-M ", " Bus-Id        Disp.A ",
            " Volatile Uncorr. ECC "),
        row(" Fan  Temp   Perf          Pwr:Usage/Cap ", "         Memory-Usage ",
            " GPU-Util  Compute M. "),
        row(" " * 41, " " * 22, "               MIG M. "),
        "|" + "=" * 41 + "+" + "=" * 22 + "+" + "=" * 22 + "|",
        row(f"   0  {_name(state['name'], 31):<31}Off ", " 00000000:01:00.0 Off ",
            " " * 18 + "N/A "),
        row(" N/A   N/A    P0              N/A /  N/A ", f"{used:>7}MiB / {total:>5}MiB ",
            "      0%      Default "),
        row(" " * 41, " " * 22, " " * 18 + "N/A "),
        CELLS,
        " " * WIDTH,
        BORDER,
        row(" Processes:" + " " * (WIDTH - 13)),
        row("  GPU   GI   CI        PID   Type   Process name                            GPU Memory "),
        row("        ID   ID                                                             Usage      "),
        row("=" * (WIDTH - 2)),
    ]
    apps = apps_of(state)
    for app in apps:
        lines.append(row(f"    0   N/A  N/A{int(app['pid']):>10}      C   "
                         f"{_process_name(str(app['name'])):<38}{int(app.get('used_mib') or 0):>9}MiB "))
    if not apps:
        lines.append(row("  No running processes found" + " " * (WIDTH - 30)))
    lines.append(BORDER)
    return lines


def main(argv, environ):
    args = list(argv)
    if args not in (GPU_QUERY, APPS_QUERY, HEADER_QUERY):
        sys.stderr.write("rig lab stand-in: unsupported nvidia-smi arguments: "
                         + " ".join(args) + "\n")
        return 2
    path = environ.get("RIG_LAB_GPU_STATE") or STATE_PATH
    try:
        state = load_state(path)
    except (OSError, ValueError) as error:
        sys.stderr.write(f"rig lab stand-in: cannot read the GPU state {path}: {error}\n")
        return 255
    if state.get("missing"):
        sys.stdout.write(NO_DRIVER + "\n")
        return 9
    try:
        if args == GPU_QUERY:
            lines = gpu_lines(state)
        elif args == APPS_QUERY:
            lines = app_lines(state)
        else:
            lines = table_lines(state)
    except (KeyError, TypeError, ValueError) as error:
        sys.stderr.write(f"rig lab stand-in: the GPU state {path} is incomplete: {error!r}\n")
        return 255
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
