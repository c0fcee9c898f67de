"""What machine a benchmark ran on: one description shared by every script here."""

from __future__ import annotations

import os
import platform
import sys


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def describe() -> str:
    """CPU, cores, load, torch and its threads, the GPU, Python: one line for a result table."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = torch.get_num_threads()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{cpu_name()}, {os.cpu_count()} cores{load}, torch {torch.__version__} "
        f"({threads} thread{'s' if threads != 1 else ''}), {gpu}, Python {sys.version.split()[0]}"
    )
