"""TLS for the driver's services: the server's context from its PEM files, and the workers'
context pinned to that one certificate (the pin is the identity: executors often reach the
driver by IP, so there is no host name to check).

Example::

    server = server_tls("driver.pem", "driver.key")        # the driver
    client = pinned_tls(open("driver.pem").read())          # each worker
"""
from __future__ import annotations

import ssl
from typing import Optional


def pinned_tls(cert_pem: Optional[str]) -> Optional[ssl.SSLContext]:
    """Client-side TLS pinned to one server certificate (no hostname check: the pin is the
    identity, and executors often reach the driver by IP); None without a certificate."""
    if not cert_pem:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=cert_pem)
    return context


def server_tls(cert: str | None, key: str | None):
    """Server-side TLS context from PEM files, or None."""
    if not cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
