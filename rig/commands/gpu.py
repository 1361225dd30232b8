"""GPU commands on a host (pure): the kernel log since a time, for Xid errors (rig/gpu/xid.py
parses what it prints), and the nvidia-smi queries (rig/gpu/smi.py parses their answers)."""

from __future__ import annotations

from ..gpu.smi import APPS_QUERY, GPU_QUERY, HEADER_QUERY

__all__ = ["APPS_QUERY", "GPU_QUERY", "HEADER_QUERY", "MEMORY_MARK", "gate_sample_command",
           "kernel_log_command", "split_gate_sample"]

MEMORY_MARK = "--- rig: gpu memory"


def kernel_log_command(since_epoch: float) -> str:
    """A shell line printing kernel messages since `since_epoch` (Unix seconds, rounded down).

    journalctl reads the journal (Debian and Ubuntu keep kernel messages there); when it fails
    (no journal access), dmesg prints the whole kernel ring buffer in ISO time instead: older
    lines included, so callers compare times. Errors are silenced and the line always exits 0."""
    since = int(since_epoch // 1)
    return (f"journalctl -k --since @{since} -o short-iso --no-pager 2>/dev/null"
            " || dmesg --time-format iso 2>/dev/null || true")


def gate_sample_command(since_epoch: float) -> str:
    """What a gate reads on a GPU host every few seconds, in one round trip: the kernel log since
    `since_epoch` (Xid errors), then a mark line, then the cards as pre-flight's GPU_QUERY lists
    them (their memory used and total). Always exits 0; a failing nvidia-smi prints nothing
    after the mark."""
    return (f"{{ {kernel_log_command(since_epoch)}; }}; echo '{MEMORY_MARK}'; "
            f"{GPU_QUERY} 2>/dev/null || true")


def split_gate_sample(stdout: str) -> tuple[str, list[tuple[int, int]]]:
    """gate_sample_command's output -> (the kernel log, [(used MiB, total MiB) per card]).
    A card whose memory nvidia-smi did not give ("[N/A]") is left out."""
    from ..gpu.smi import parse_gpus

    log, _, cards = stdout.partition(MEMORY_MARK + "\n")
    return log, [(g.memory_used_mib, g.memory_total_mib) for g in parse_gpus(cards)
                 if g.memory_used_mib is not None and g.memory_total_mib is not None]
