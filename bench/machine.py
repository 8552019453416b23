"""The machine description every benchmark writes next to its figures."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """CPU model, logical CPUs, RAM, OS and Python, read from /proc where available."""
    cpu = platform.processor() or platform.machine() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) clock ticks of all CPUs so far (Linux /proc/stat; zeros elsewhere). Steal is time the VM's
    host gave to other guests: a step with a high steal share ran on less CPU than the machine reports."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[7] if len(fields) > 7 else 0, sum(fields[:8])
    except (OSError, ValueError):
        return 0, 0


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The steal share (%) of the CPU time between two :func:`cpu_ticks` readings (None when unknown)."""
    ticks = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / ticks, 1) if ticks > 0 else None
