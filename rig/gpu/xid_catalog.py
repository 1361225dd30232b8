"""The Xid errors rig knows, with NVIDIA's short meaning and whether one fails a canary.

Source: NVIDIA, "Xid Errors" (docs.nvidia.com/deploy/xid-errors/), page "Analyzing Xid Errors
with the Xid Catalog" (docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html): the catalog
for Ampere and newer GPUs (RTX 3060 is Ampere, RTX 4090 Ada), columns Code, Mnemonic,
Description and "Resolution Bucket (Immediate Action)". The indexed copy of that page shows only
its first rows (Xid 1-8), so the rows below were read from leptonai/gpud
components/accelerator/nvidia/xid/catalog_generated.go (commit b9842de2, "Code generated ...
Source: https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html", sheet "Catalog"),
whose rows 1-8 equal the indexed page. Where NVIDIA's older "Xid Errors" listing (r555, as copied
in leptonai/gpud components/accelerator/nvidia/query/xid/xid.go at commit 2175d7d3^) words a
meaning differently, the older text is in the comment. Read 2026-11-30.

`fatal`: the Xid fails a canary (the new image ran while it happened). rig fails a canary when
the GPU needs a reset or reboot (NVIDIA's immediate action RESET_GPU / RESTART_BM / a workflow
for memory errors), when memory errors happened (ECC, row remapping), or when the GPU work
itself faulted (engine exceptions, MMU faults: NVIDIA's RESTART_APP): on a canary the app that
faulted is most likely the image under test, which is exactly what a canary is for. Xids that
NVIDIA marks as follow-ups of another Xid, or informational, are not fatal themselves.
"""

from __future__ import annotations

from typing import NamedTuple


class XidInfo(NamedTuple):
    meaning: str  # NVIDIA's description
    mnemonic: str  # NVIDIA's mnemonic
    action: str  # NVIDIA's resolution bucket (immediate action)
    fatal: bool  # fails a canary


SOURCE = ("NVIDIA Xid Errors, 'Analyzing Xid Errors with the Xid Catalog', "
          "https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html, read 2026-11-30")

XID_CATALOG: dict[int, XidInfo] = {
    # The GPU stopped running the channel's work; the app has to be restarted.
    8: XidInfo("GPU stopped processing", "ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT",
               "RESTART_APP", True),
    # An engine exception raised by the GPU work (e.g. "Graphics SM Warp Exception ... Out Of
    # Range Address"): the canary's own kernels faulted.
    13: XidInfo("Graphics Engine Exception",
                "ROBUST_CHANNEL_GR_EXCEPTION / ROBUST_CHANNEL_GR_ERROR_SW_NOTIFY",
                "RESTART_APP", True),
    # MMU fault: the GPU work touched memory it does not own (illegal address).
    31: XidInfo("GPU memory page fault", "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT",
                "RESTART_APP", True),
    32: XidInfo("Invalid or corrupted push buffer stream", "ROBUST_CHANNEL_PBDMA_ERROR",
                "RESTART_APP", True),
    # NVIDIA's immediate action is IGNORE: the driver reset a channel, usually after an Xid 13 or
    # 31 of the same process. Fatal for a canary all the same: the channel that stopped is the
    # canary's work (the log line names the pid).
    43: XidInfo("GPU stopped processing", "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "IGNORE",
                True),
    # Not fatal: "Preemptive cleanup, due to previous errors". NVIDIA's catalog says to follow
    # the other Xid when it is not alone ("Not Solo: IGNORE (follow other Xid)"), and it is also
    # what the driver logs when a process is killed with GPU work in flight, as a rollout does
    # to the old container. The Xid it follows (13, 31, 48, ...) carries the verdict.
    45: XidInfo("Preemptive cleanup, due to previous errors -- Most likely to see when running "
                "multiple cuda applications and hitting a DBE",
                "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL", "WORKFLOW_XID_45", False),
    46: XidInfo("GPU stopped processing", "ROBUST_CHANNEL_GPU_TIMEOUT_ERROR", "RESET_GPU", True),
    # Uncorrectable (double bit) ECC error.
    48: XidInfo("Double Bit ECC Error", "ROBUST_CHANNEL_GPU_ECC_DBE", "WORKFLOW_XID_48", True),
    # "Unused" in the Ampere+ catalog; the older listing: "Internal micro-controller
    # breakpoint/warning (newer drivers)". A warning: not fatal by itself (a halt is Xid 62).
    61: XidInfo("Internal micro-controller breakpoint/warning", "PMU_BREAKPOINT",
                "CONTACT_SUPPORT", False),
    62: XidInfo("Internal micro-controller halt", "PMU_HALT_ERROR", "RESET_GPU", True),
    # Older listing: "ECC page retirement or row remapping recording event" (the kernel line
    # says "Row Remapper: New row marked for remapping, reset gpu to activate"). NVIDIA's
    # immediate action is IGNORE for a datacenter fleet; for a canary it means memory errors
    # happened while the new image ran, and the remap waits for a GPU reset: fatal.
    63: XidInfo("GPU memory remapping event", "INFOROM_DRAM_RETIREMENT_EVENT", "IGNORE", True),
    # Older listing: "ECC page retirement or row remapper recording failure".
    64: XidInfo("GPU memory remapping failure", "INFOROM_DRAM_RETIREMENT_FAILURE", "RESET_GPU",
                True),
    # A video decoder engine exception raised by the GPU work, like Xid 13 for NVDEC.
    68: XidInfo("NVDEC0 Exception", "ROBUST_CHANNEL_NVDEC0_ERROR", "RESTART_APP", True),
    69: XidInfo("Graphics Engine class error", "ROBUST_CHANNEL_GR_CLASS_ERROR", "RESTART_APP",
                True),
    # NVLink error (the two workstations have no NVLink; kept for completeness).
    74: XidInfo("NVLINK Error", "NVLINK_ERROR", "WORKFLOW_NVLINK_ERR", True),
    79: XidInfo("GPU has fallen off the bus", "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS",
                "RESTART_BM", True),
    # NVIDIA's immediate action is IGNORE (single-bit errors are corrected); a high rate of them
    # under the new image is still a memory-health signal an operator must see first: fatal.
    92: XidInfo("High single-bit ECC error rate", "EXCESSIVE_SBE_INTERRUPTS", "IGNORE", True),
    # Older listing: "Contained ECC error".
    94: XidInfo("Contained memory error", "ROBUST_CHANNEL_CONTAINED_ERROR", "RESTART_APP", True),
    # Older listing: "Uncontained ECC error".
    95: XidInfo("Uncontained memory error", "ROBUST_CHANNEL_UNCONTAINED_ERROR", "RESET_GPU",
                True),
    109: XidInfo("Context Switch Timeout Error", "ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR",
                 "RESET_GPU", True),
    # GSP: the GPU System Processor firmware stopped answering the driver.
    119: XidInfo("GSP RPC Timeout", "GSP_RPC_TIMEOUT", "RESET_GPU", True),
    120: XidInfo("GSP Error", "GSP_ERROR", "RESET_GPU", True),
    # Informational: names the recovery another Xid needs ("GPU recovery action changed from 0x0
    # (None) to 0x2 (Node Reboot Required)"); the other Xid carries the verdict.
    154: XidInfo("GPU Recovery Action Changed", "GPU_RECOVERY_ACTION_CHANGED", "XID_154", False),
}
