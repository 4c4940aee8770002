"""Where workers that connect back reach their pool, and how they say who they are.

Policy: a pool whose launcher's workers connect back (the ranks of an ``mpiexec``
job) listens on a Unix socket for those on this host (it can pass the descriptors
of shared-memory buffers) and, when the launcher may place workers on other hosts,
over TCP. The Unix socket has an abstract name (Linux's: no file), so nothing is
left behind however the process ends. A worker that connects sends the pool's
token first, as raw bytes before anything is unpickled, so that strangers are
refused; then its pid, host, rank and launch. It has :data:`HELLO_TIMEOUT`
seconds to do so.
"""

from __future__ import annotations

import hmac
import logging
import os
import selectors
import socket
import uuid
from collections.abc import Iterator

from . import _wire as wire

__all__ = ["HELLO_TIMEOUT", "Listener"]

logger = logging.getLogger("dispatcher")

HELLO_TIMEOUT = 10.0  # seconds a worker that connected has to say who it is


class Listener:
    """The listening sockets of one pool, registered with its ``selector`` as ``data``."""

    def __init__(self, selector: selectors.BaseSelector, spread: bool, data: object):
        self.token = os.urandom(32)
        self.sockets: list[socket.socket] = []
        self.addresses: list[str] = []  # where workers reach the pool ("unix:@name", "tcp:host:port")
        name = f"dispatcher-pool-{os.getpid()}-{uuid.uuid4().hex}"
        local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        local.bind("\0" + name)
        local.listen(128)
        self.sockets.append(local)
        self.addresses.append(f"unix:@{name}")  # @: the abstract namespace
        if spread:
            remote = socket.create_server(("", 0), backlog=128)
            self.sockets.append(remote)
            self.addresses.append(f"tcp:{socket.gethostname()}:{remote.getsockname()[1]}")
        for sock in self.sockets:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, data)

    def accept(self, listening: socket.socket) -> Iterator[tuple]:
        """``(connection, pid, host, rank, launch id)`` of each worker waiting on
        ``listening`` that said who it is; the others are refused."""
        while True:
            try:
                conn, _ = listening.accept()
            except OSError:  # BlockingIOError: no one else is waiting
                return
            try:
                conn.settimeout(HELLO_TIMEOUT)
                token = wire.recv_exact(conn, len(self.token))
                if not hmac.compare_digest(bytes(token), self.token):
                    raise ConnectionError("a connection without this pool's token")
                _, pid, host, rank, launch_id = wire.recv(conn)
                conn.settimeout(None)
            except (OSError, EOFError, ValueError, ConnectionError) as exc:
                logger.warning("refused a connection to the worker pool: %s", exc)
                conn.close()
                continue
            yield conn, pid, host, rank, launch_id

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
