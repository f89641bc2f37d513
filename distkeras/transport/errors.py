"""What can go wrong on the wire, one class each, all under :class:`TransportError`. The
services (coordinator, parameter server, peer endpoints) and their clients raise these; a
message always names the address and what to change.

The names of earlier releases (``PSError``, ``PSConnectionError``, ...: the transport began as
the parameter server's) remain as aliases, for code that catches them.
"""
from __future__ import annotations


class TransportError(Exception):
    """Base class of every transport error."""


class TransportConnectionError(TransportError, ConnectionError):
    """A server (the driver's, or a peer's) cannot be reached, or the connection broke."""


class ServerBusyError(TransportConnectionError):
    """The server is full or busy with pending connections: retried within the connect timeout."""


class TransportTimeoutError(TransportConnectionError, TimeoutError):
    """No reply within ``io_timeout``; the connection is no longer usable."""


class AuthenticationError(TransportError):
    """Mutual HMAC authentication (or the TLS handshake) failed."""


class RemoteError(TransportError):
    """The server-side handler raised; the message is the remote exception text."""


class BindError(TransportError, OSError):
    """The server could not bind its listening socket."""


class ProtocolError(TransportError):
    """Malformed frame; ``reason`` is the key counted in the server's ``stats["dropped"]``."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


# the names of earlier releases
PSError = TransportError
PSConnectionError = TransportConnectionError
PSBusyError = ServerBusyError
PSTimeoutError = TransportTimeoutError
PSAuthError = AuthenticationError
PSRemoteError = RemoteError
PSBindError = BindError
PSProtocolError = ProtocolError
