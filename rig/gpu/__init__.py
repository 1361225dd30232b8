"""GPU facts as pure data: CUDA/driver compatibility, Xid kernel messages, nvidia-smi output."""
