"""systemd's readiness protocol: datagrams such as READY=1 sent to $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("service.notify")


class Notifier:
    """Sends sd_notify messages; does nothing when not started by systemd (no NOTIFY_SOCKET).

    The protocol is one datagram of newline-separated KEY=value lines on a unix socket, as in
    sd_notify(3); libsystemd is not needed for that.
    """

    def __init__(self, address: str | None) -> None:
        self._address: str | None = None
        if address and address.startswith("@"):
            # An abstract socket: systemd writes its leading NUL as '@'.
            self._address = "\0" + address[1:]
        elif address and address.startswith("/"):
            self._address = address
        elif address:
            # vsock: and other transports systemd knows are for VMs, not for this service.
            log.warning("NOTIFY_SOCKET is not a unix socket; not notifying systemd")
        self._failed = False

    @classmethod
    def from_environ(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str) -> None:
        """notify(READY="1", STATUS="...") sends READY=1 and STATUS=... in one datagram."""
        if self._address is None:
            return
        message = "\n".join(f"{name}={value}" for name, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            # systemd going away must not take the broker with it; say so once.
            if not self._failed:
                self._failed = True
                log.warning(
                    "cannot notify systemd", extra={"event": "notify", "error": exc.strerror}
                )
