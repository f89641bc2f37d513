"""The α–β network model of a simulated cluster: sending b bytes over a link takes α + b/β.

α is the link's latency (seconds per message), β its bandwidth (bytes per second). Links are
per pair of workers (``shared=False``: a switched network, every worker's NIC full duplex), or
``shared=True``: every message of a worker, and every message to the parameter server, queues
on one NIC of bandwidth β (the driver's NIC is the parameter server's bottleneck either way).

The collectives' costs follow from the one-message cost (Thakur et al. 2005, Patarasuk & Yuan
2009)::

    ring all-reduce of b bytes, n workers   2(n−1)·(α + b/(nβ))
    neighbour mixing (D-PSGD), d neighbours α + d·b/β shared,  α + b/β per link
    pairwise gossip (AD-PSGD, SwarmSGD)     2·(α + b/β)       (a request and its reply)
    parameter-server commit + reply         α + b_up/β  queued at the server, then α + b/β

Example::

    net = Network.parse("10gbit:0.1ms")
    net.message(4e6)                    # 0.1 ms + 4 MB / 1.25 GB/s = 3.3 ms
    net.ring_allreduce(4e6, 16)         # 30 · (0.1 ms + 0.25 MB / 1.25 GB/s) = 9.0 ms
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_RATE = {"bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "tbit": 1e12 / 8,
         "b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
#: named networks (the thesis' cluster had 10 Gbit/s Ethernet). ``loopback`` is distkeras'
#: transport between processes on the 2-core development machine: 5 GB/s, and 150 µs a
#: message, half a commit round trip of 10k floats (``benchmarks/ps_bandwidth.py``: 5.4k
#: commits/s from 2 clients), the software's share of the latency, which a real link adds to.
NAMED = {"ideal": (math.inf, 0.0), "loopback": (5e9, 150e-6), "1gbit": (1e9 / 8, 100e-6),
         "10gbit": (1e10 / 8, 100e-6), "100gbit": (1e11 / 8, 5e-6)}


@dataclass(frozen=True)
class Network:
    """Links of ``bandwidth`` bytes/s and ``latency`` seconds; ``shared``: one NIC per worker."""

    bandwidth: float = math.inf
    latency: float = 0.0
    shared: bool = False

    @classmethod
    def parse(cls, text: "str | Network") -> "Network":
        """``"10gbit:0.1ms"``, ``"1gbit:50us:shared"``, ``"ideal"`` (infinitely fast, no
        latency), ``"loopback"``, ``"1gbit"``, ``"10gbit"`` (100 µs), ``"100gbit"``."""
        if isinstance(text, Network):
            return text
        parts = [p.strip().lower() for p in str(text).split(":") if p.strip()]
        shared = "shared" in parts
        parts = [p for p in parts if p != "shared"]
        if not parts:
            raise ValueError("network spec is empty: give e.g. '10gbit:0.1ms' or 'ideal'")
        if parts[0] in NAMED and len(parts) <= 2:
            bandwidth, latency = NAMED[parts[0]]
            if len(parts) == 2:
                latency = _quantity(parts[1], _TIME, "latency")
            return cls(bandwidth, latency, shared)
        if len(parts) != 2:
            raise ValueError(f"network spec {text!r}: give BANDWIDTH:LATENCY[:shared], e.g. "
                             f"'10gbit:0.1ms', or one of {', '.join(NAMED)}")
        return cls(_quantity(parts[0], _RATE, "bandwidth"), _quantity(parts[1], _TIME, "latency"),
                   shared)

    @property
    def spec(self) -> str:
        bandwidth = "inf" if math.isinf(self.bandwidth) else f"{self.bandwidth * 8 / 1e9:g}gbit"
        return f"{bandwidth}:{self.latency * 1e3:g}ms" + (":shared" if self.shared else "")

    def message(self, nbytes: float) -> float:
        """Seconds for one message of ``nbytes`` over one link."""
        return self.latency + nbytes / self.bandwidth

    def ring_allreduce(self, nbytes: float, n: int) -> float:
        """Seconds for a ring all-reduce of ``nbytes`` among ``n`` workers (0 for one)."""
        if n < 2:
            return 0.0
        return 2 * (n - 1) * self.message(nbytes / n)

    def neighbours(self, nbytes: float, degree: int) -> float:
        """Seconds for one D-PSGD round: a replica to each of ``degree`` neighbours and one
        from each (full duplex: both directions at once)."""
        if degree < 1:
            return 0.0
        return (self.latency + degree * nbytes / self.bandwidth if self.shared
                else self.message(nbytes))

    def round_trip(self, up: float, down: float) -> float:
        """Seconds for a request of ``up`` bytes and its reply of ``down`` bytes."""
        return self.message(up) + self.message(down)


def _quantity(text: str, units: dict, what: str) -> float:
    match = re.fullmatch(r"([0-9.]+(?:e[+-]?[0-9]+)?|inf)\s*([a-zµ/]*)", text)
    unit = (match.group(2) or "").replace("/s", "") if match else None
    if match is None or unit not in units:
        raise ValueError(f"{what} {text!r}: a number with a unit ({', '.join(units)}), e.g. "
                         f"{'10gbit' if what == 'bandwidth' else '0.1ms'}")
    return float(match.group(1)) * units[unit]
