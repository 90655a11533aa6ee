"""Memory and disk watermarks: when to hold publishers.

Past either watermark, sessions stop taking SEND and COMMIT frames (see
``Session._park``) until the broker is back under it; consumers, acks, admin requests and
lease extensions flow on, so queues can drain. A publish held longer than
``publish_timeout`` gets an ERROR saying why. A journal that cannot be written (disk full,
I/O error) counts as the disk watermark.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import BrokerSettings

#: The memory watermark when the config sets none: this share of the machine's RAM
#: (RabbitMQ's vm_memory_high_watermark default).
DEFAULT_MEMORY_SHARE = 0.4


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def free_disk_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class ResourceMonitor:
    def __init__(self, settings: BrokerSettings) -> None:
        self.data_dir = settings.data_dir
        self.memory_limit = settings.memory_limit or int(machine_memory_bytes() * DEFAULT_MEMORY_SHARE)
        self.disk_free_limit = settings.disk_free_limit

    def check(self, journal_error: str | None) -> str | None:
        """Why publishers must wait now, or None."""
        if journal_error is not None:
            return journal_error
        rss = rss_bytes()
        if self.memory_limit and rss > self.memory_limit:
            return f"memory use {rss >> 20} MiB is over the limit of {self.memory_limit >> 20} MiB"
        if self.disk_free_limit:
            try:
                free = free_disk_bytes(self.data_dir)
            except OSError as exc:
                return f"the data dir's free space cannot be read ({exc.strerror})"
            if free < self.disk_free_limit:
                return (
                    f"free disk space {free >> 20} MiB on {self.data_dir} is under the limit of "
                    f"{self.disk_free_limit >> 20} MiB"
                )
        return None
