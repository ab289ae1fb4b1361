"""Listening sockets, made the same way for the broker and the emulator."""

from __future__ import annotations

import contextlib
import os
import socket
import stat


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when it
    # sees it, and without that Nagle plus delayed ACKs add 40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.set_inheritable(True)
    return sock


def bind_unix(path: str, group: str | None = None) -> socket.socket:
    """A unix socket at `path`, mode 0660, owned by `group` (a name or a number) if given."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)  # a stale socket from a previous run; anything else we leave alone
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Create it 0660 from the start (uvicorn's own uds= makes it 0666): only the owner and the
    # group that game servers run in may connect.
    old_umask = os.umask(0o117)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o660)
    if group is not None:
        # The group that game servers run in; a process may only give a file to its own groups
        # (under systemd: SupplementaryGroups=), so a wrong one fails here, at start-up.
        os.chown(path, -1, int(group) if group.isdigit() else _group_id(group))
    return sock


def _group_id(name: str) -> int:
    import grp  # Unix only, as unix sockets are

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise OSError(f"no such group: {name!r}") from None


def describe(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"
