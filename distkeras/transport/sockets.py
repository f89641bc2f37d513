"""Socket plumbing of the transport: buffer sizes tuned to what the kernel allows, deadlines on
blocking calls, a TLS accept bounded by the handshake's deadline, and a shutdown that wakes a
thread blocked in ``recv``.

Example::

    tune_socket(sock)                     # large buffers, no Nagle
    shutdown_quietly(sock)                # a reader blocked on it returns at once
"""
from __future__ import annotations

import selectors
import socket
import ssl
import time
from typing import Optional

SOCKET_BUFFER = 4 * 1024 ** 2


def _set_deadline(sock: socket.socket, deadline: Optional[float]) -> None:
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline passed")
        sock.settimeout(left)


def _autotune_max() -> dict[int, int]:
    """Linux TCP autotuning ceilings (bytes) per buffer option; empty elsewhere."""
    found = {}
    for opt, name in ((socket.SO_SNDBUF, "tcp_wmem"), (socket.SO_RCVBUF, "tcp_rmem")):
        try:
            with open(f"/proc/sys/net/ipv4/{name}", encoding="ascii") as fh:
                found[opt] = int(fh.read().split()[2])
        except (OSError, ValueError, IndexError):
            pass
    return found


_AUTOTUNE = _autotune_max()


def tune_socket(sock: socket.socket, buffer_size: int = SOCKET_BUFFER) -> None:
    """TCP_NODELAY (small frames go out at once) and kernel buffers of at least ``buffer_size``.

    A buffer is only set explicitly when the kernel's autotuning ceiling is smaller: setting
    SO_RCVBUF/SO_SNDBUF switches autotuning off, which measured slower on loopback whenever
    the ceiling was already large (Linux defaults: 4 MiB send, 6-32 MiB receive).
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not a TCP socket (e.g. a test socketpair)
        pass
    if buffer_size:
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            if _AUTOTUNE.get(opt, 0) >= buffer_size:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, buffer_size)
            except OSError:
                pass


def tls_accept(ctx: ssl.SSLContext, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
    """Server-side TLS handshake bounded by ``deadline`` in total (a client trickling bytes
    cannot stretch it, unlike a per-read timeout)."""
    sock.setblocking(False)
    tls = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    try:
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                events = selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                events = selectors.EVENT_WRITE
            left = deadline - time.monotonic()
            with selectors.DefaultSelector() as sel:
                sel.register(tls, events)
                if left <= 0 or not sel.select(left):
                    raise socket.timeout("TLS handshake deadline passed")
    except BaseException:
        tls.close()
        raise


def shutdown_quietly(sock: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    """shutdown(``how``) wakes a thread blocked in recv on this socket; errors ignored. On a
    TLS socket the TCP connection is shut down under the TLS layer, which stays in place
    (``SSLSocket.shutdown`` would drop it, and what the thread sends next would go out in
    the clear)."""
    try:
        socket.socket.shutdown(sock, how)
    except OSError:
        pass
