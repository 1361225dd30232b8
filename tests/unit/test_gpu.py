"""rig/gpu (CUDA/driver table, Xid kernel lines, nvidia-smi output) and the lab's stand-in
nvidia-smi, against recorded real outputs (tests/unit/fixtures/gpu/*.txt, each naming its source).

`#` lines in the fixtures are their provenance notes, not nvidia-smi or kernel output: recorded()
drops them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rig.lab.nvidia_smi as standin
from rig.commands import gpu as gpu_commands
from rig.config import load_profile
from rig.gpu import cuda, smi, xid
from rig.gpu.cuda_table import TOOLKIT_DRIVERS
from rig.gpu.xid_catalog import XID_CATALOG
from rig.lab.gpu import DEFAULT_DRIVER, standin_state, standin_uuid

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "gpu"
MAINPC = load_profile(REPO / "profiles" / "mainpc.yml")
PC2 = load_profile(REPO / "profiles" / "pc2.yml")
PROPERTY = settings(derandomize=True, max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def recorded(name: str) -> str:
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("#"))


# NVIDIA's own image environment (nvidia/cuda 12.1 Dockerfile, as quoted in the code index).
REQUIRE_12_1 = (
    "cuda>=12.1 brand=tesla,driver>=450,driver<451 brand=tesla,driver>=470,driver<471 "
    "brand=unknown,driver>=470,driver<471 brand=nvidia,driver>=470,driver<471 "
    "brand=nvidiartx,driver>=470,driver<471 brand=geforce,driver>=470,driver<471 "
    "brand=geforcertx,driver>=470,driver<471 brand=quadro,driver>=470,driver<471"
)
# gitlab.com/nvidia/container-images/cuda/-/issues/200
REQUIRE_11_5 = ("cuda>=11.5 brand=tesla,driver>=418,driver<419 brand=tesla,driver>=450,driver<451 "
                "brand=tesla,driver>=470,driver<471")
IMAGE = "10.77.0.1:5000/rig/x@sha256:0f3a"


# --------------------------------------------------------------------------------------------
# CUDA toolkit -> minimum driver


def test_min_driver_table_is_the_minimum_of_each_minor():
    assert cuda.MIN_DRIVER == {
        (11, 0): "450.51.05", (11, 1): "455.23", (11, 2): "460.27.03", (11, 3): "465.19.01",
        (11, 4): "470.42.01", (11, 5): "495.29.05", (11, 6): "510.39.01", (11, 7): "515.43.04",
        (11, 8): "520.61.05",
        (12, 0): "525.60.13", (12, 1): "530.30.02", (12, 2): "535.54.03", (12, 3): "545.23.06",
        (12, 4): "550.54.14", (12, 5): "555.42.02", (12, 6): "560.28.03", (12, 8): "570.26",
        (12, 9): "575.51.03",
        (13, 0): "580.65.06", (13, 1): "590.44.01", (13, 2): "595.45.04", (13, 3): "610.43.02",
    }


def test_table_rows_are_well_formed_and_newest_first():
    releases = [tuple(int(x) for x in release.split(".")) for release, _, _ in TOOLKIT_DRIVERS]
    assert releases == sorted(releases, reverse=True)
    for release, label, driver in TOOLKIT_DRIVERS:
        assert label.startswith("CUDA ") and cuda.driver_ok(driver, driver), (release, driver)


@pytest.mark.parametrize("version, driver", [
    ((12, 1), "530.30.02"), ((12, 0), "525.60.13"), ((11, 8), "520.61.05"),
    ((13, 0), "580.65.06"), ((12, 2), "535.54.03"),
])
def test_min_driver(version, driver):
    assert cuda.min_driver(version) == driver


@pytest.mark.parametrize("version", [(12, 7), (13, 4), (14, 0), (10, 2), ("a", "b"), (12,), None])
def test_min_driver_unknown_is_none(version):
    assert cuda.min_driver(version) is None


@pytest.mark.parametrize("env, expected", [
    ({"NVIDIA_REQUIRE_CUDA": REQUIRE_12_1, "CUDA_VERSION": "12.1.1"}, (12, 1)),
    ({"NVIDIA_REQUIRE_CUDA": REQUIRE_11_5}, (11, 5)),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.1", "CUDA_VERSION": "12.4.1"}, (12, 1)),  # REQUIRE wins
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.1.1"}, (12, 1)),
    ({"NVIDIA_REQUIRE_CUDA": "brand=tesla,cuda>=11.8"}, (11, 8)),
    ({"CUDA_VERSION": "12.1.1"}, (12, 1)),
    ({"CUDA_VERSION": "13.0"}, (13, 0)),
    ({"CUDA_VERSION": " 12.4.1\n"}, (12, 4)),
    # no cuda term in NVIDIA_REQUIRE_CUDA: CUDA_VERSION decides
    ({"NVIDIA_REQUIRE_CUDA": "brand=tesla,driver>=470", "CUDA_VERSION": "11.8.0"}, (11, 8)),
    ({"NVIDIA_REQUIRE_CUDA": "", "CUDA_VERSION": "11.8.0"}, (11, 8)),
    ({}, None),
    ({"PATH": "/usr/bin"}, None),
    # malformed: None, never a guess
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=twelve", "CUDA_VERSION": "12.1.1"}, None),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>12.1"}, None),
    ({"NVIDIA_REQUIRE_CUDA": "cuda>=12"}, None),
    ({"NVIDIA_REQUIRE_CUDA": 12.1}, None),
    ({"CUDA_VERSION": "latest"}, None),
    ({"CUDA_VERSION": "12"}, None),
    ({"CUDA_VERSION": "１２.１"}, None),  # fullwidth digits
    ({"CUDA_VERSION": None}, None),
    ({"CUDA_VERSION": ["12.1"]}, None),
])
def test_parse_requirement(env, expected):
    assert cuda.parse_requirement(env) == expected


@pytest.mark.parametrize("env", [None, [], "cuda>=12.1", 42, {1: 2}])
def test_parse_requirement_of_a_non_mapping(env):
    assert cuda.parse_requirement(env) is None


@PROPERTY
@given(st.dictionaries(st.sampled_from(["NVIDIA_REQUIRE_CUDA", "CUDA_VERSION", "X"]),
                       st.one_of(st.text(), st.none(), st.integers(), st.binary())))
def test_parse_requirement_never_raises(env):
    result = cuda.parse_requirement(env)
    assert result is None or (isinstance(result, tuple) and all(isinstance(x, int) for x in result))


@PROPERTY
@given(st.text(), st.text())
def test_parse_requirement_never_raises_on_text(require, version):
    for env in ({"NVIDIA_REQUIRE_CUDA": require}, {"CUDA_VERSION": version},
                {"NVIDIA_REQUIRE_CUDA": "cuda>=" + require, "CUDA_VERSION": version}):
        result = cuda.parse_requirement(env)
        assert result is None or len(result) == 2


@pytest.mark.parametrize("found, needed, ok", [
    ("535.129.03", "530.30.02", True),
    ("530.30.02", "530.30.02", True),
    ("470.256.02", "530.30.02", False),
    ("455.23", "455.23.04", False),
    ("455.23.04", "455.23", True),
    ("535.129.3", "535.129.03", True),
    ("1000.1", "999.99.99", True),  # numbers, not text
    ("99.99", "530.30.02", False),
    ("", "530.30.02", False),
    ("abc", "530.30.02", False),
    ("535.129.03-1", "530.30.02", False),
    ("535.129.03", "not a version", False),
])
def test_driver_ok(found, needed, ok):
    assert cuda.driver_ok(found, needed) is ok


@pytest.mark.parametrize("driver, version", [
    ("535.129.03", "12.2"), ("535.54.03", "12.2"), ("470.256.02", "11.4"), ("525.60.13", "12.0"),
    ("530.30.02", "12.1"), ("570.86.10", "12.8"), ("580.65.06", "13.0"), ("610.43.02", "13.3"),
    ("400.1", None), ("junk", None),
])
def test_cuda_for_driver(driver, version):
    assert cuda.cuda_for_driver(driver) == version


def test_driver_problem_old_driver_names_everything():
    env = {"NVIDIA_REQUIRE_CUDA": REQUIRE_12_1, "CUDA_VERSION": "12.1.1"}
    assert cuda.driver_problem("pc2", IMAGE, env, "470.256.02") == (
        "pc2: 10.77.0.1:5000/rig/x@sha256:0f3a needs CUDA 12.1 (driver >= 530.30.02), pc2 has "
        "driver 470.256.02 (GeForce cards have no forward compatibility: update the driver, or "
        "build on an older CUDA base)")


def test_driver_problem_none_when_fine_or_no_cuda():
    env = {"NVIDIA_REQUIRE_CUDA": REQUIRE_12_1}
    assert cuda.driver_problem("mainpc", IMAGE, env, "535.129.03") is None
    assert cuda.driver_problem("mainpc", IMAGE, env, "530.30.02") is None
    assert cuda.driver_problem("mainpc", IMAGE, {"PATH": "/bin"}, "535.129.03") is None
    assert cuda.driver_problem("mainpc", IMAGE, {}, None) is None


def test_driver_problem_without_a_driver():
    assert cuda.driver_problem("pc2", IMAGE, {"CUDA_VERSION": "12.1.1"}, None) == (
        "pc2: 10.77.0.1:5000/rig/x@sha256:0f3a needs CUDA 12.1 (driver >= 530.30.02), pc2 has "
        "no working NVIDIA driver (nvidia-smi cannot reach one)")


def test_driver_problem_unknown_cuda_version():
    line = cuda.driver_problem("pc2", IMAGE, {"NVIDIA_REQUIRE_CUDA": "cuda>=13.9"}, "610.43.02")
    assert line.startswith("pc2: 10.77.0.1:5000/rig/x@sha256:0f3a needs CUDA 13.9: unknown CUDA "
                           "version 13.9: not in rig's table (NVIDIA CUDA Toolkit Release Notes")
    assert "rig/gpu/cuda_table.py" in line


def test_driver_problem_unreadable_declaration_and_driver():
    line = cuda.driver_problem("pc2", IMAGE, {"CUDA_VERSION": "12.x\nINJECTED"}, "535.129.03")
    assert line == ("pc2: 10.77.0.1:5000/rig/x@sha256:0f3a declares CUDA in a form rig cannot "
                    "read (CUDA_VERSION='12.x?INJECTED')")
    assert cuda.driver_problem("pc2", IMAGE, {"CUDA_VERSION": "12.1.1"}, "[N/A]") == (
        "pc2: 10.77.0.1:5000/rig/x@sha256:0f3a needs CUDA 12.1 (driver >= 530.30.02), pc2 "
        "reports driver '[N/A]', which is not a version")


@PROPERTY
@given(st.text(), st.text(), st.dictionaries(st.sampled_from(["NVIDIA_REQUIRE_CUDA", "CUDA_VERSION"]),
                                             st.text()), st.one_of(st.none(), st.text()))
def test_driver_problem_is_one_line_or_none(host, image, env, driver):
    line = cuda.driver_problem(host, image, env, driver)
    assert line is None or (isinstance(line, str) and "\n" not in line and "\r" not in line)


# --------------------------------------------------------------------------------------------
# Xid kernel lines


def test_catalog_covers_the_canary_xids():
    required = {13, 31, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 119, 120}
    assert required <= set(XID_CATALOG)
    fatal = {13, 31, 43, 48, 63, 64, 74, 79, 92, 94, 95, 119, 120}
    assert {n for n in required if XID_CATALOG[n].fatal} == fatal | {62, 68, 69}
    assert not XID_CATALOG[45].fatal and not XID_CATALOG[61].fatal and not XID_CATALOG[154].fatal
    assert XID_CATALOG[79].meaning == "GPU has fallen off the bus"
    assert XID_CATALOG[48].meaning == "Double Bit ECC Error"
    assert XID_CATALOG[13].meaning == "Graphics Engine Exception"
    assert XID_CATALOG[31].meaning == "GPU memory page fault"
    assert XID_CATALOG[119].meaning == "GSP RPC Timeout"
    assert all(info.meaning and info.mnemonic and info.action for info in XID_CATALOG.values())


def E(time, pci, number, detail):  # noqa: N802 - reads like the record it builds
    info = XID_CATALOG[number]
    return xid.XidEvent(time, pci, number, detail, info.meaning, info.fatal)


def test_dmesg_ctime_xid_119_among_other_nvrm_lines():
    assert xid.parse_kernel_lines(recorded("xid-dmesg-ctime-119.txt")) == [
        E("Sun Feb 23 16:24:18 2025", "0000:9b:00", 119,
          "pid=2024380, name=nvidia-smi, Timeout after 6s of waiting for RPC response from GPU4 "
          "GSP! Expected function 103 (GSP_RM_ALLOC) (0x2081 0x4)."),
    ]


def test_dmesg_decode_iso():
    events = xid.parse_kernel_lines(recorded("xid-dmesg-decode-iso.txt"))
    assert [(e.time, e.pci, e.xid, e.fatal) for e in events] == [
        ("2025-01-21T04:41:44,283302+00:00", "0000:38:00", 13, True),
        ("2025-01-21T04:41:44,283390+00:00", "0000:38:00", 13, True),
        ("2025-01-21T04:41:44,283575+00:00", "0000:38:00", 13, True),
        ("2025-01-21T04:41:44,287197+00:00", "0000:38:00", 43, True),
    ]
    assert events[0].detail == ("pid='<unknown>', name=<unknown>, Graphics SM Global Exception on "
                                "(GPC 8, TPC 5, SM 1): Multiple Warp Errors")
    assert events[3].detail == "pid=2924364, name=pt_main_thread, Ch 00000008"


def test_dmesg_uptime_stamps_have_no_wall_clock_time():
    events = xid.parse_kernel_lines(recorded("xid-dmesg-uptime-13.txt"))
    assert [(e.time, e.pci, e.xid) for e in events] == [
        (None, "0000:05:00", 13), (None, "0000:05:00", 13), (None, "0000:05:00", 13),
        (None, "0000:43:00", 13),
    ]
    assert events[0].detail == "Graphics SM Warp Exception on (GPC 0, TPC 0): Out Of Range Address"
    assert events[0].meaning == "Graphics Engine Exception" and events[0].fatal


def test_syslog_lines():
    events = xid.parse_kernel_lines(recorded("xid-syslog.txt"))
    assert [(e.time, e.pci, e.xid, e.fatal) for e in events] == [
        ("Feb 15 17:37:45", "0000:41:00", 13, True),
        ("Feb 15 17:37:45", "0000:41:00", 13, True),
        ("Dec 23 23:30:56", "0000:01:00", 32, True),
        ("Dec 23 23:30:56", "0000:01:00", 69, True),
        ("Dec 23 23:32:27", "0000:01:00", 62, True),
    ]
    assert events[4].detail == "0096(1c54) 00000000 00000000"


def test_journal_xid_79_and_gsp_lines():
    assert xid.parse_kernel_lines(recorded("xid-journal-79.txt")) == [
        E("May 18 19:02:39", "0000:2b:00", 79, "GPU has fallen off the bus."),
    ]


def test_journal_short_iso():
    events = xid.parse_kernel_lines(recorded("xid-journal-short-iso.txt") + "-- No entries --\n")
    assert [(e.time, e.xid, e.fatal) for e in events] == [
        ("2026-05-18T19:02:39+0200", 79, True), ("2026-05-18T19:02:39+02:00", 79, True)]


def test_bare_lines_old_format_and_unknown_xid():
    events = xid.parse_kernel_lines(recorded("xid-bare.txt"))
    assert events[:2] == [
        E(None, "0000:10:1c", 63,
          "pid=1896, Row Remapper: New row marked for remapping, reset gpu to activate."),
        E(None, "0000:dc:00", 45,
          "pid=1818990, name=python3, Ch 00000001 caused by previous Xid 149"),
    ]
    assert not events[1].fatal  # 45 follows another Xid
    unknown = events[2]
    assert (unknown.time, unknown.pci, unknown.xid, unknown.detail, unknown.fatal) == (
        None, "0000:01:00", 16, "Head 00000000 Count 00000000", False)
    assert unknown.meaning == "Xid 16 is not in rig's catalog (see NVIDIA's Xid catalog)"
    assert len(events) == 3


def test_the_briefs_shapes():
    assert xid.parse_kernel_lines(
        "[Tue Nov 28 10:01:02 2023] NVRM: Xid (PCI:0000:01:00): 79, pid=1234, GPU has fallen off "
        "the bus.\n"
        "kernel: NVRM: Xid (PCI:0000:65:00): 13, Graphics SM Warp Exception on (GPC 0, TPC 0)\n"
        "2023-11-28T10:01:02,123456+00:00 NVRM: Xid (PCI:0000:01:00): 79\n"
    ) == [
        E("Tue Nov 28 10:01:02 2023", "0000:01:00", 79, "pid=1234, GPU has fallen off the bus."),
        E(None, "0000:65:00", 13, "Graphics SM Warp Exception on (GPC 0, TPC 0)"),
        E("2023-11-28T10:01:02,123456+00:00", "0000:01:00", 79, ""),
    ]


@pytest.mark.parametrize("line", [
    "NVRM: GPU at PCI:0000:01:00: GPU-bc0fa0b9-cac2-f507-b715-9bebdb69c71e",
    "NVRM: Xid (PCI:0000:01:00): seventy-nine, GPU has fallen off the bus.",
    "NVRM: Xid (PCI:zzzz): 79, GPU has fallen off the bus.",
    "NVRM: Xid (PCI:0000:01:00) 79",
    "Xid (PCI:0000:01:00): 79, without the NVRM prefix",
    "",
])
def test_non_xid_lines_are_skipped(line):
    assert xid.parse_kernel_lines(line) == []


@PROPERTY
@given(st.text())
def test_kernel_lines_never_raise(text):
    for event in xid.parse_kernel_lines(text):
        assert isinstance(event.xid, int) and isinstance(event.fatal, bool)


@PROPERTY
@given(st.lists(st.one_of(st.text(max_size=30), st.sampled_from([
    "NVRM: Xid (", "PCI:", "0000:01:00", "): ", "79", ", ", "pid=1", "\n", "[", "]", "kernel: ",
    "2025-01-21T04:41:44,283302+00:00 ", "Feb 15 17:37:45 ", "\r", "\x00", "99999999999",
]))))
def test_kernel_lines_never_raise_on_near_misses(parts):
    xid.parse_kernel_lines("".join(parts))


def test_kernel_lines_of_a_non_str():
    assert xid.parse_kernel_lines(None) == [] and xid.parse_kernel_lines(b"NVRM: Xid") == []


def test_kernel_log_command():
    assert gpu_commands.kernel_log_command(1700000000.9) == (
        "journalctl -k --since @1700000000 -o short-iso --no-pager 2>/dev/null"
        " || dmesg --time-format iso 2>/dev/null || true")


# --------------------------------------------------------------------------------------------
# nvidia-smi


def test_queries_are_the_documented_ones():
    assert smi.GPU_QUERY == ("nvidia-smi --query-gpu=index,uuid,name,compute_cap,memory.total,"
                             "memory.used,driver_version --format=csv,noheader,nounits")
    assert smi.APPS_QUERY == ("nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,"
                              "used_memory --format=csv,noheader,nounits")
    assert smi.HEADER_QUERY == "nvidia-smi"


GPU_4090 = smi.Gpu(0, "GPU-00000000-0000-0000-0000-000000004090", "NVIDIA GeForce RTX 4090", "8.9",
                   24564, 3000, "535.129.03")
GPU_3060 = smi.Gpu(0, "GPU-00000000-0000-0000-0000-000000003060", "NVIDIA GeForce RTX 3060", "8.6",
                   12288, 1, "535.129.03")


def test_parse_recorded_gpus():
    assert smi.parse_gpus(recorded("smi-gpu-query-4090.txt")) == [GPU_4090]
    assert smi.parse_gpus(recorded("smi-gpu-query-3060.txt")) == [GPU_3060]


def test_recorded_gpus_match_the_profiles():
    for gpu, profile in ((GPU_4090, MAINPC), (GPU_3060, PC2)):
        assert (gpu.name, gpu.compute_cap, gpu.memory_total_mib) == (
            profile.gpu.model, profile.gpu.compute_cap, profile.gpu.memory_mib)


def test_parse_recorded_apps():
    assert smi.parse_apps(recorded("smi-apps-4090.txt")) == [
        smi.App("GPU-00000000-0000-0000-0000-000000004090", 4242, "other-job", 3000)]
    assert smi.parse_apps(recorded("smi-apps-3060.txt")) == []
    assert smi.parse_apps(recorded("smi-apps-wddm.txt")) == [
        smi.App("GPU-00000000-0000-0000-0000-000000000000", 2140, r"C:\Windows\System32\dwm.exe",
                None),
        smi.App("GPU-00000000-0000-0000-0000-000000000000", 13264,
                r"C:\Windows\System32\ShellHost.exe", None),
    ]


def test_not_available_values_blank_lines_and_units():
    text = ("\n0, GPU-a, NVIDIA GeForce RTX 4090, [N/A], 24564 MiB, [Not Supported], 535.129.03\n\n"
            "1, GPU-b, NVIDIA GeForce RTX 3060, 8.6, N/A, 12, [N/A]\n"
            "x, GPU-c, not an index, 8.6, 1, 1, 1\n"
            "2, not-a-uuid, NVIDIA GeForce RTX 3060, 8.6, 1, 1, 1\n"
            "3, GPU-d, too, few\n")
    assert smi.parse_gpus(text) == [
        smi.Gpu(0, "GPU-a", "NVIDIA GeForce RTX 4090", None, 24564, None, "535.129.03"),
        smi.Gpu(1, "GPU-b", "NVIDIA GeForce RTX 3060", "8.6", None, 12, None),
    ]
    assert smi.parse_apps("GPU-a, 7, python3 -m vllm, serve, x, [Not Supported]\n\nGPU-a, x, y, 1\n"
                          "GPU-a, 9, z\n") == [smi.App("GPU-a", 7, "python3 -m vllm, serve, x", None)]


def test_no_driver():
    text = recorded("smi-no-driver.txt")
    assert text == smi.NO_DRIVER + "\n"
    assert smi.smi_failed(text)
    assert smi.parse_gpus(text) == [] and smi.parse_apps(text) == []
    assert smi.parse_header_cuda(text) is None and smi.parse_header_driver(text) is None


def test_other_failures_and_healthy_output():
    # github.com/anderskm/gputil/issues/55 (exit 18)
    assert smi.smi_failed("Failed to initialize NVML: Driver/library version mismatch\n"
                          "NVML library version: 535.161\n")
    assert not smi.smi_failed(recorded("smi-gpu-query-4090.txt"))
    assert not smi.smi_failed(recorded("smi-header-4090.txt"))
    assert not smi.smi_failed("") and not smi.smi_failed(None)


@pytest.mark.parametrize("fixture, cuda_version, driver", [
    ("smi-header-4090.txt", "12.2", "535.183.01"),
    ("smi-header-3060.txt", "12.2", "535.54.03"),
    ("smi-header-535-layout.txt", "12.2", "535.129.03"),
    ("smi-header-610.txt", "13.3", "610.57.04"),
])
def test_parse_header(fixture, cuda_version, driver):
    text = recorded(fixture)
    assert smi.parse_header_cuda(text) == cuda_version
    assert smi.parse_header_driver(text) == driver


def test_header_without_a_version():
    banner = "| NVIDIA-SMI 570.133.20             Driver Version: 570.133.20    CUDA Version: N/A  |"
    assert smi.parse_header_cuda(banner) is None
    assert smi.parse_header_driver(banner) == "570.133.20"
    assert smi.parse_header_cuda("") is None


@PROPERTY
@given(st.text())
def test_smi_parsers_never_raise(text):
    smi.parse_gpus(text)
    smi.parse_apps(text)
    smi.parse_header_cuda(text)
    smi.parse_header_driver(text)
    smi.smi_failed(text)


# --------------------------------------------------------------------------------------------
# the lab's stand-in nvidia-smi


def run_standin(state: dict | None, command: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "gpu.json"
    if state is not None:
        path.write_text(json.dumps(state))
    env = {**os.environ, "RIG_LAB_GPU_STATE": str(path)}
    args = command.split()[1:]
    return subprocess.run([sys.executable, standin.__file__, *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_standin_is_a_standalone_script():
    source = Path(standin.__file__).read_text()
    assert source.startswith("#!/usr/bin/python3\n")
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["import json", "import os", "import sys", "import time"]
    assert ["nvidia-smi", *standin.GPU_QUERY] == smi.GPU_QUERY.split()
    assert ["nvidia-smi", *standin.APPS_QUERY] == smi.APPS_QUERY.split()
    assert ["nvidia-smi", *standin.HEADER_QUERY] == smi.HEADER_QUERY.split()
    assert standin.NO_DRIVER == smi.NO_DRIVER


def mainpc_state() -> dict:
    return standin_state(MAINPC.gpu, driver="535.129.03", current={
        "uuid": "GPU-00000000-0000-0000-0000-000000004090",
        "apps": [{"pid": 4242, "name": "other-job", "used_mib": 3000}]})


def pc2_state() -> dict:
    return standin_state(PC2.gpu, driver="535.129.03", used_mib=1,
                         current={"uuid": "GPU-00000000-0000-0000-0000-000000003060"})


@pytest.mark.parametrize("state, gpus_fixture, apps_fixture", [
    (mainpc_state, "smi-gpu-query-4090.txt", "smi-apps-4090.txt"),
    (pc2_state, "smi-gpu-query-3060.txt", "smi-apps-3060.txt"),
])
def test_standin_answers_as_recorded(state, gpus_fixture, apps_fixture, tmp_path):
    gpus = run_standin(state(), smi.GPU_QUERY, tmp_path)
    assert (gpus.returncode, gpus.stderr) == (0, "")
    assert gpus.stdout == recorded(gpus_fixture)
    apps = run_standin(state(), smi.APPS_QUERY, tmp_path)
    assert (apps.returncode, apps.stderr, apps.stdout) == (0, "", recorded(apps_fixture))


def test_standin_parses_into_the_profiles(tmp_path):
    assert smi.parse_gpus(run_standin(mainpc_state(), smi.GPU_QUERY, tmp_path).stdout) == [GPU_4090]
    assert smi.parse_gpus(run_standin(pc2_state(), smi.GPU_QUERY, tmp_path).stdout) == [GPU_3060]


def test_standin_table_has_nvidia_smis_layout(tmp_path):
    result = run_standin(mainpc_state(), smi.HEADER_QUERY, tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    real = recorded("smi-header-535-layout.txt").splitlines()
    assert len(lines[0]) == len(real[0]) == 31
    assert all(len(line) == 89 for line in lines[1:])
    assert lines[1:8] == real[1:8]  # the same driver and CUDA: banner and headings alike
    assert lines[10:18] == real[10:12] + real[16:22]  # borders, spacer, process headings
    assert lines[8] == "|   0  NVIDIA GeForce RTX 4090        Off | 00000000:01:00.0 Off |" \
                       "                  N/A |"
    assert lines[9] == "| N/A   N/A    P0              N/A /  N/A |   3000MiB / 24564MiB |" \
                       "      0%      Default |"
    assert lines[18] == "|    0   N/A  N/A      4242      C   other-job                     " \
                        "             3000MiB |"
    assert lines[19:] == [real[-1]]
    assert smi.parse_header_cuda(result.stdout) == "12.2"
    assert smi.parse_header_driver(result.stdout) == "535.129.03"


def test_standin_table_without_processes(tmp_path):
    lines = run_standin(pc2_state(), smi.HEADER_QUERY, tmp_path).stdout.splitlines()
    assert lines[9].endswith("|      1MiB / 12288MiB |      0%      Default |")
    assert lines[-2:] == ["|  No running processes found" + " " * 59 + "|", "+" + "-" * 87 + "+"]


def test_standin_missing_driver(tmp_path):
    state = standin_state(PC2.gpu, missing=True)
    for query in (smi.GPU_QUERY, smi.APPS_QUERY, smi.HEADER_QUERY):
        result = run_standin(state, query, tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (9, recorded("smi-no-driver.txt"),
                                                                     "")
        assert smi.smi_failed(result.stdout) and smi.parse_gpus(result.stdout) == []


@pytest.mark.parametrize("command", [
    "nvidia-smi -L",
    "nvidia-smi --query-gpu=name --format=csv",
    smi.GPU_QUERY + " --id=0",
    "nvidia-smi -q",
])
def test_standin_refuses_other_arguments(command, tmp_path):
    result = run_standin(mainpc_state(), command, tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("rig lab stand-in: unsupported nvidia-smi arguments: "
                             + " ".join(command.split()[1:]) + "\n")


def test_standin_without_state(tmp_path):
    result = run_standin(None, smi.GPU_QUERY, tmp_path)
    assert result.returncode == 255 and result.stdout == ""
    assert result.stderr.startswith("rig lab stand-in: cannot read the GPU state ")


# --------------------------------------------------------------------------------------------
# rig/lab/gpu.py


def test_standin_state_fresh():
    state = standin_state(MAINPC.gpu)
    assert state == {
        "name": "NVIDIA GeForce RTX 4090", "uuid": standin_uuid("NVIDIA GeForce RTX 4090"),
        "memory_mib": 24564, "compute_cap": "8.9", "driver": DEFAULT_DRIVER, "cuda": "12.2",
        "used_mib": 0, "missing": False, "apps": [],
    }
    assert state["uuid"] == standin_state(MAINPC.gpu)["uuid"]  # stable across runs
    assert smi.parse_gpus(f"0, {state['uuid']}, x, 8.9, 1, 1, 1")  # a well-formed GPU uuid
    json.dumps(state)


def test_standin_state_updates_keep_what_is_not_replaced():
    current = {"uuid": "GPU-kept", "driver": "550.54.15", "used_mib": 5, "missing": True,
               "apps": [{"pid": 1, "name": "a", "used_mib": 2}], "name": "stale"}
    before = json.loads(json.dumps(current))
    state = standin_state(PC2.gpu, driver="470.256.02", current=current)
    assert state == {
        "name": "NVIDIA GeForce RTX 3060", "uuid": "GPU-kept", "memory_mib": 12288,
        "compute_cap": "8.6", "driver": "470.256.02", "cuda": "11.4", "used_mib": 5,
        "missing": True, "apps": [{"pid": 1, "name": "a", "used_mib": 2}],
    }
    assert current == before
    kept = standin_state(PC2.gpu, used_mib=0, missing=False, current=current)
    assert (kept["driver"], kept["cuda"], kept["used_mib"], kept["missing"]) == (
        "550.54.15", "12.4", 0, False)
    assert standin_state(PC2.gpu, driver="396.26")["cuda"] == "N/A"


def test_a_standin_driver_too_old_for_an_image_is_reported(tmp_path):
    state = standin_state(PC2.gpu, driver="470.256.02")
    driver = smi.parse_gpus(run_standin(state, smi.GPU_QUERY, tmp_path).stdout)[0].driver
    assert cuda.driver_problem("pc2", IMAGE, {"NVIDIA_REQUIRE_CUDA": REQUIRE_12_1}, driver) == (
        "pc2: 10.77.0.1:5000/rig/x@sha256:0f3a needs CUDA 12.1 (driver >= 530.30.02), pc2 has "
        "driver 470.256.02 (GeForce cards have no forward compatibility: update the driver, or "
        "build on an older CUDA base)")


def _smi_calls() -> set[str]:
    """Every nvidia-smi invocation in the commands rig sends to hosts."""
    import re

    from rig.commands import container, gpu

    lines = [gpu.gate_sample_command(1_800_000_000), str(container.gpu_pids()),
             str(container.rollout_state_command()), smi.GPU_QUERY, smi.APPS_QUERY,
             smi.HEADER_QUERY]
    found = set()
    for line in lines:
        for match in re.finditer(r"nvidia-smi((?: --?[\w=.,-]+)*)", line):
            found.add(match.group(0))
    return found


def test_the_standin_answers_every_nvidia_smi_call_rig_makes(tmp_path):
    """Everything that reads the GPU in production reads it the same way on the lab: a query
    rig starts making must be one the stand-in answers (it refuses others with exit 2)."""
    calls = _smi_calls()
    assert smi.GPU_QUERY in calls and smi.APPS_QUERY in calls and "nvidia-smi" in calls
    for call in sorted(calls):
        result = run_standin(mainpc_state(), call, tmp_path)
        assert (result.returncode, result.stderr) == (0, ""), call


def test_xid_events_before_a_time_are_left_out_unless_their_time_cannot_be_read():
    from rig.gpu.xid import epoch_of, parse_kernel_lines, since

    text = ("2027-01-15T07:59:59,999999+00:00 NVRM: Xid (PCI:0000:01:00): 79, pid=1, old\n"
            "2027-01-15T08:00:00+0000 h kernel: NVRM: Xid (PCI:0000:01:00): 48, at the second\n"
            "2027-01-15T09:00:00+01:00 h kernel: NVRM: Xid (PCI:0000:01:00): 63, same instant\n"
            "[  179.437933] NVRM: Xid (PCI:0000:01:00): 13, uptime only\n"
            "2027-01-15T10:00:00 h kernel: NVRM: Xid (PCI:0000:01:00): 31, no offset\n")
    events = parse_kernel_lines(text)
    assert epoch_of(events[0].time) == 1_799_999_999.999999
    assert epoch_of(events[2].time) == 1_800_000_000.0
    assert epoch_of(events[3].time) is None and epoch_of(events[4].time) is None
    assert [e.xid for e in since(events, 1_800_000_000.0)] == [48, 63, 13, 31]
    assert [e.xid for e in since(events, 1_800_000_000.5)] == [13, 31]
