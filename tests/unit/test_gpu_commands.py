

def test_a_gate_sample_reads_the_kernel_log_then_each_cards_memory_in_one_round_trip():
    from rig.commands.gpu import gate_sample_command, split_gate_sample

    line = gate_sample_command(1_800_000_000.9)
    assert line == ("{ journalctl -k --since @1800000000 -o short-iso --no-pager 2>/dev/null || "
                    "dmesg --time-format iso 2>/dev/null || true; }; echo '--- rig: gpu memory'; "
                    "nvidia-smi --query-gpu=index,uuid,name,compute_cap,memory.total,memory.used,"
                    "driver_version --format=csv,noheader,nounits 2>/dev/null || true")
    log = "2026-11-30T10:01:02+0000 mainpc kernel: NVRM: Xid (PCI:0000:01:00): 79, pid=1\n"
    cards = ("0, GPU-1, NVIDIA GeForce RTX 4090, 8.9, 24564, 18200, 535.129.03\n"
             "1, GPU-2, NVIDIA GeForce RTX 3060, 8.6, [N/A], [N/A], 535.129.03\n"
             "2, GPU-3, NVIDIA GeForce RTX 3060, 8.6, 12288, 2, 535.129.03\n")
    assert split_gate_sample(log + "--- rig: gpu memory\n" + cards) == \
        (log, [(18200, 24564), (2, 12288)])
    assert split_gate_sample(log + "--- rig: gpu memory\n") == (log, [])
    assert split_gate_sample("-- No entries --\n") == ("-- No entries --\n", [])
