"""The transport under every service of a run (the coordinator, the parameter server, the
workers' peer endpoints): authenticated binary frames over TCP, optional TLS.

Generic on purpose: what a service does is a handler plugged into :class:`FrameServer`;
application ops are integers >= :data:`OP_FIRST_APP` (0-15 are reserved for the transport).

Example::

    import secrets, numpy as np
    from distkeras.transport import Client, FrameServer, Reply, OP_FIRST_APP

    secret = secrets.token_bytes(32)
    with FrameServer(lambda conn, f: Reply(f.op, payload=f.payload * 2), secret) as srv:
        with Client(*srv.address, secret, worker_id=0) as c:
            c.request(OP_FIRST_APP, np.ones(4, np.float32)).payload   # -> [2. 2. 2. 2.]
"""
from . import errors
from .client import Client
from .errors import (AuthenticationError, BindError, ProtocolError, PSAuthError, PSBindError,
                     PSBusyError, PSConnectionError, PSError, PSProtocolError, PSRemoteError,
                     PSTimeoutError, RemoteError, ServerBusyError, TransportConnectionError,
                     TransportError, TransportTimeoutError)
from .protocol import (DEFAULT_MAX_PAYLOAD, HEADER_SIZE, OP_AUTH, OP_AUTH_OK, OP_BYE, OP_CHALLENGE,
                       OP_ERROR, OP_FIRST_APP, OP_PING, VERSION, Frame, FrameIO, Reply, frame_limit,
                       payload_size)
from .server import Connection, FrameServer
from .tls import pinned_tls, server_tls

__all__ = [
    "Client", "Connection", "DEFAULT_MAX_PAYLOAD", "Frame", "FrameIO", "FrameServer",
    "HEADER_SIZE", "OP_AUTH", "OP_AUTH_OK", "OP_BYE", "OP_CHALLENGE", "OP_ERROR", "OP_FIRST_APP",
    "OP_PING", "Reply", "VERSION", "frame_limit", "payload_size", "pinned_tls", "server_tls",
    "errors",
    "TransportError", "TransportConnectionError", "ServerBusyError", "TransportTimeoutError",
    "AuthenticationError", "RemoteError", "BindError", "ProtocolError",
    # the names of earlier releases
    "PSError", "PSConnectionError", "PSBusyError", "PSTimeoutError", "PSAuthError",
    "PSRemoteError", "PSBindError", "PSProtocolError",
]
