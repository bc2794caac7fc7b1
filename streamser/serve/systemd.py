"""systemd's notify protocol (sd_notify): READY, STATUS, STOPPING and the watchdog.

Without ``NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

_LOGGER = logging.getLogger(__name__)


class Notifier:
    """Sends datagrams to ``$NOTIFY_SOCKET``."""

    def __init__(self) -> None:
        """Read ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` from the environment."""
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        self.address = address
        self._socket: socket.socket | None = None
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and mine else 0.0

    def notify(self, message: str) -> None:
        """Send one notification (several may be joined with newlines)."""
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self.address)
        except OSError as err:
            _LOGGER.warning("sd_notify to %s failed: %s", self.address, err)

    def ready(self, status: str) -> None:
        """READY=1 with a STATUS line."""
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """A STATUS line."""
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        """STOPPING=1."""
        self.notify("STOPPING=1\nSTATUS=draining")

    async def watchdog_loop(self) -> None:
        """Send WATCHDOG=1 from the event loop at half the watchdog interval.

        Being a task on the loop, it stops pinging when the loop is blocked, so
        systemd restarts a wedged daemon.
        """
        if not self.watchdog_s:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)
