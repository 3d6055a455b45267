"""The systemd notify protocol (sd_notify(3)): a datagram of KEY=VALUE lines to $NOTIFY_SOCKET.

Without NOTIFY_SOCKET (not started by systemd) every call does nothing. An address
starting with '@' is an abstract socket. With WATCHDOG_USEC set (and WATCHDOG_PID, if
set, naming this process), `watchdog()` pings at half the interval, as systemd asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("triggerd.systemd")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2_000_000 if usec.isdigit() and int(usec) > 0 and for_us else None

    def send(self, *lines: str) -> None:
        if self.address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload units tell this reload from an older one.
        self.send(
            "RELOADING=1",
            f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
            "STATUS=reloading the configuration",
        )

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=draining: finishing running runs")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    async def watchdog(self) -> None:
        """Ping WATCHDOG=1 at half of WATCHDOG_USEC until cancelled (the loop being alive is the proof)."""
        if self.watchdog_interval is None:
            return
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                self.send("WATCHDOG=1")
                await asyncio.sleep(self.watchdog_interval)
