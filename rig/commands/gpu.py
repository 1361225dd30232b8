"""GPU commands on a host (pure): the kernel log since a time, for Xid errors (rig/gpu/xid.py
parses what it prints), and the nvidia-smi queries (rig/gpu/smi.py parses their answers)."""

from __future__ import annotations

from ..gpu.smi import APPS_QUERY, GPU_QUERY, HEADER_QUERY

__all__ = ["APPS_QUERY", "GPU_QUERY", "HEADER_QUERY", "kernel_log_command"]


def kernel_log_command(since_epoch: float) -> str:
    """A shell line printing kernel messages since `since_epoch` (Unix seconds, rounded down).

    journalctl reads the journal (Debian and Ubuntu keep kernel messages there); when it fails
    (no journal access), dmesg prints the whole kernel ring buffer in ISO time instead: older
    lines included, so callers compare times. Errors are silenced and the line always exits 0."""
    since = int(since_epoch // 1)
    return (f"journalctl -k --since @{since} -o short-iso --no-pager 2>/dev/null"
            " || dmesg --time-format iso 2>/dev/null || true")
