"""The keys and tags of the transport: the handshake's HMAC-SHA256 proofs (each side proves it
knows the per-run secret, bound to fresh nonces and the worker id), the connection's session key,
and the per-frame Poly1305 tags under one-time keys drawn from a ChaCha20 keystream
(:class:`FrameMAC`).

Example::

    proof = auth_mac(secret, server_nonce, worker_id, client_nonce)    # the client
    key = session_key(secret, server_nonce, client_nonce, worker_id)   # both sides
    tag = FrameMAC(key, b"c2s").tag(header, payload)
"""
from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.poly1305 import Poly1305


def auth_mac(secret: bytes, server_nonce: bytes, worker_id: int, client_nonce: bytes) -> bytes:
    """Client proof: HMAC-SHA256(secret, server_nonce || worker_id (u32 BE) || client_nonce)."""
    msg = server_nonce + int(worker_id).to_bytes(4, "big") + client_nonce
    return hmac.new(secret, msg, hashlib.sha256).digest()


def server_mac(secret: bytes, client_nonce: bytes) -> bytes:
    """Server proof: HMAC-SHA256(secret, client_nonce || b"server")."""
    return hmac.new(secret, client_nonce + b"server", hashlib.sha256).digest()


def session_key(secret: bytes, server_nonce: bytes, client_nonce: bytes, worker_id: int) -> bytes:
    """The connection's key: HMAC-SHA256(secret, "session" || nonces || worker id)."""
    msg = b"distkeras-session" + server_nonce + client_nonce + int(worker_id).to_bytes(4, "big")
    return hmac.new(secret, msg, hashlib.sha256).digest()


class FrameMAC:
    """The per-frame tags of one direction of a connection: Poly1305 over header || payload
    under a one-time key, frame i's key = bytes [32i, 32i + 32) of the ChaCha20 keystream under
    the direction's key, HMAC-SHA256(session key, direction). Every key is single-use: a
    replayed, reordered or reflected frame fails its tag. Keys are drawn 256 frames at a time
    (one cipher call instead of one HMAC per frame: a small commit's fixed cost).

    Example::

        mac = FrameMAC(key, b"c2s")
        tag = mac.tag(header, payload)        # the sender; the receiver: mac.start(header),
                                              # .update(chunks), then mac.finish(h) == tag
    """

    KEYS_PER_DRAW = 256

    def __init__(self, key: bytes, direction: bytes):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

        stream_key = hmac.new(key, direction, hashlib.sha256).digest()
        self._stream = Cipher(algorithms.ChaCha20(stream_key, bytes(16)), None).encryptor()
        self._zeros = bytes(32 * self.KEYS_PER_DRAW)
        self._keys = memoryview(b"")
        self.counter = 0

    def start(self, header):
        i = self.counter % self.KEYS_PER_DRAW
        if i == 0:
            self._keys = memoryview(self._stream.update(self._zeros))
        self.counter += 1
        h = Poly1305(self._keys[32 * i:32 * i + 32])
        h.update(bytes(header))
        return h

    @staticmethod
    def finish(h) -> bytes:
        return h.finalize()

    def tag(self, header, payload=None) -> bytes:
        h = self.start(header)
        if payload is not None and len(payload):
            h.update(payload)
        return h.finalize()
