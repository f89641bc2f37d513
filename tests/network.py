"""Emulated networks for real: hosts in Linux network namespaces, joined through a bridge by veth
pairs whose links are shaped with ``tc`` (``tbf`` rate, ``netem`` delay), on private addresses
this harness creates and removes, and for a bounded time.

    this process (the driver)      hub namespace          host namespaces
    10.213.K.1 ── veth ─────────── br0 ── veth (shaped) ── 10.213.K.10  (host 0)
                                       └─ veth (shaped) ── 10.213.K.11  (host 1) ...

Each host link is shaped in both directions (egress of its two ends): a rate with ``tbf`` and
half the round-trip delay each way with ``netem``. What the kernel cannot do is said, never
faked: without ``sch_netem`` (``tc`` answers "Specified qdisc kind is unknown") the delay is
left out and :attr:`EmulatedNetwork.shaping` says so. Without namespaces (not root, no
``iproute2``) the harness falls back to shaping loopback (one link shared by every flow of the
machine, so only for a benchmark that has it to itself) or to plain loopback; :attr:`mode`
says which ran.

Example::

    with EmulatedNetwork(hosts=2, rate="1gbit", delay="0.1ms") as net:
        proc = net.popen(0, ["python", "-c", "print('hello from', 'host 0')"])
        print(net.mode, net.driver, net.address(0), net.shaping)
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import threading
import time
from typing import Optional

NETNS, LOOPBACK, PLAIN = "namespaces", "shaped loopback", "plain loopback"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def can_use_namespaces() -> bool:
    """Root, ``ip`` and ``tc``, and the kernel lets this process make a namespace."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        return False
    probe = f"dkprobe{secrets.token_hex(3)}"
    made = _run("ip", "netns", "add", probe, check=False).returncode == 0
    if made:
        _run("ip", "netns", "del", probe, check=False)
    return made


class EmulatedNetwork:
    """``hosts`` network namespaces behind shaped links; torn down on exit and, at the latest,
    after ``max_seconds`` (a watchdog)."""

    def __init__(self, hosts: int = 2, rate: Optional[str] = "1gbit",
                 delay: Optional[str] = None, max_seconds: float = 1800.0,
                 fallback: str = LOOPBACK):
        """``fallback``: what to run without namespaces, :data:`LOOPBACK` (shape ``lo``: only
        for a harness that has the machine to itself) or :data:`PLAIN`."""
        self.hosts, self.rate, self.delay = int(hosts), rate, delay
        self.max_seconds = float(max_seconds)
        self.mode = NETNS if can_use_namespaces() else fallback
        self.tag = secrets.token_hex(2)
        self.subnet = 100 + secrets.randbelow(150)      # 10.213.<subnet>.0/24, ours only
        self.shaping: dict[str, str] = {}
        self._created: list[tuple[str, ...]] = []      # undo commands, last first
        self._watchdog: Optional[threading.Timer] = None
        self._lock = threading.Lock()

    # -- addresses -------------------------------------------------------------------------------
    @property
    def driver(self) -> str:
        """This process's address on the emulated network."""
        return f"10.213.{self.subnet}.1" if self.mode == NETNS else "127.0.0.1"

    def address(self, host: int) -> str:
        return f"10.213.{self.subnet}.{10 + host}" if self.mode == NETNS else "127.0.0.1"

    def namespace(self, host: int) -> str:
        return f"dk{self.tag}h{host}"

    def describe(self) -> str:
        link = ", ".join(f"{k} {v}" for k, v in self.shaping.items()) or "unshaped"
        return f"{self.mode} ({link})"

    # -- processes -------------------------------------------------------------------------------
    def command(self, host: int, argv: list[str]) -> list[str]:
        """``argv`` run on host ``host`` (inside its namespace)."""
        if self.mode != NETNS:
            return list(argv)
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def popen(self, host: int, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(host, argv), **kwargs)

    # -- life cycle ------------------------------------------------------------------------------
    def __enter__(self) -> "EmulatedNetwork":
        try:
            if self.mode == NETNS:
                self._build_namespaces()
            elif self.mode == LOOPBACK:
                self._shape_loopback()
        except BaseException:
            self.close()
            raise
        self._watchdog = threading.Timer(self.max_seconds, self.close)
        self._watchdog.daemon = True
        self._watchdog.start()
        atexit.register(self.close)          # an interpreter that exits without unwinding
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove everything this harness created (idempotent)."""
        with self._lock:
            if self._watchdog is not None:
                self._watchdog.cancel()
            while self._created:
                _run(*self._created.pop(), check=False)

    def _do(self, *argv: str, undo: Optional[tuple[str, ...]] = None) -> None:
        _run(*argv)
        if undo:
            self._created.append(undo)

    def _build_namespaces(self) -> None:
        hub, root = f"dk{self.tag}hub", f"dk{self.tag}r"
        net = f"10.213.{self.subnet}"
        self._do("ip", "netns", "add", hub, undo=("ip", "netns", "del", hub))
        self._do("ip", "netns", "exec", hub, "ip", "link", "add", "br0", "type", "bridge")
        self._do("ip", "netns", "exec", hub, "ip", "link", "set", "br0", "up")
        # this process's side: a veth from the root namespace into the bridge
        self._do("ip", "link", "add", root, "type", "veth", "peer", "name", f"{root}p",
                 undo=("ip", "link", "del", root))
        self._do("ip", "link", "set", f"{root}p", "netns", hub)
        self._do("ip", "netns", "exec", hub, "ip", "link", "set", f"{root}p", "master", "br0")
        self._do("ip", "netns", "exec", hub, "ip", "link", "set", f"{root}p", "up")
        self._do("ip", "addr", "add", f"{net}.1/24", "dev", root)
        self._do("ip", "link", "set", root, "up")
        for h in range(self.hosts):
            ns, inner, outer = self.namespace(h), f"dk{self.tag}e{h}", f"dk{self.tag}b{h}"
            self._do("ip", "netns", "add", ns, undo=("ip", "netns", "del", ns))
            self._do("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
            self._do("ip", "link", "set", inner, "netns", ns)
            self._do("ip", "link", "set", outer, "netns", hub)
            self._do("ip", "netns", "exec", hub, "ip", "link", "set", outer, "master", "br0")
            self._do("ip", "netns", "exec", hub, "ip", "link", "set", outer, "up")
            self._do("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            self._do("ip", "netns", "exec", ns, "ip", "addr", "add", f"{net}.{10 + h}/24",
                     "dev", inner)
            self._do("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
            self._shape(("ip", "netns", "exec", ns), inner)      # host -> bridge
            self._shape(("ip", "netns", "exec", hub), outer)     # bridge -> host
        self._wait_reachable()

    def _shape(self, where: tuple[str, ...], dev: str) -> None:
        """Rate (tbf) and half the round-trip delay (netem, when the kernel has it) on the
        egress of ``dev``."""
        half = _half(self.delay) if self.delay else None
        if half and _run(*where, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:",
                         "netem", "delay", half, check=False).returncode == 0:
            self.shaping["delay"] = f"{self.delay} round trip (netem)"
            parent = ("parent", "1:1", "handle", "10:")
        else:
            if half:
                self.shaping["delay"] = ("not emulated: this kernel has no netem qdisc (tc: "
                                         "'Specified qdisc kind is unknown')")
            parent = ("root", "handle", "10:")
        if self.rate:
            _run(*where, "tc", "qdisc", "add", "dev", dev, *parent, "tbf", "rate", self.rate,
                 "burst", _burst(self.rate), "latency", "50ms")
            self.shaping["rate"] = f"{self.rate} each way (tbf)"

    def _shape_loopback(self) -> None:
        """Fallback without namespaces: the rate and delay on ``lo`` itself (every loopback
        flow of this machine shares it, so only while the harness is up)."""
        if os.geteuid() != 0 or not shutil.which("tc"):
            self.mode = PLAIN
            self.shaping["rate"] = "none: not root or no tc"
            return
        probe = _run("tc", "qdisc", "show", "dev", "lo", check=False).stdout
        if "noqueue" not in probe and probe.strip():
            self.mode = PLAIN        # someone else shapes lo: leave it alone
            self.shaping["rate"] = f"none: lo already has a qdisc ({probe.strip()[:60]})"
            return
        try:
            self._shape(("env",), "lo")
            self._created.append(("tc", "qdisc", "del", "dev", "lo", "root"))
        except subprocess.CalledProcessError as exc:
            self.mode = PLAIN
            self.shaping["rate"] = f"none: {exc.stderr.strip()[:80]}"

    def _wait_reachable(self, timeout: float = 10.0) -> None:
        """Every host reaches this process over the bridge (a TCP connect, from inside)."""
        import socket
        import sys

        with socket.socket() as listener:
            listener.bind((self.driver, 0))
            listener.listen(self.hosts)
            port = listener.getsockname()[1]
            probe = (f"import socket,time\nfor _ in range(int({timeout}*5)):\n"
                     f"    try: socket.create_connection(('{self.driver}', {port}), 1); break\n"
                     f"    except OSError: time.sleep(0.2)\nelse: raise SystemExit(1)")
            for h in range(self.hosts):
                if _run(*self.command(h, [sys.executable, "-c", probe]),
                        check=False).returncode != 0:
                    raise RuntimeError(f"host {h} ({self.address(h)}) cannot reach the driver "
                                       f"at {self.driver} through the emulated network")


def _half(delay: str) -> str:
    """Half of a tc time (``"1ms"`` → ``"500us"``)."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
    for unit in ("us", "ms", "s"):
        if delay.endswith(unit):
            seconds = float(delay[:-len(unit)]) * units[unit] / 2
            return f"{seconds * 1e6:.0f}us"
    raise ValueError(f"delay {delay!r}: give it with a unit, e.g. '0.1ms'")


def _burst(rate: str) -> str:
    """A tbf bucket that holds ~1 ms at ``rate`` (at least 32 KB): full speed for a stream."""
    scale = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for unit, factor in scale.items():
        if rate.endswith(unit):
            bits = float(rate[:-len(unit)]) * factor
            return f"{max(32 * 1024, int(bits / 8 / 1000))}b"
    raise ValueError(f"rate {rate!r}: give it as e.g. '100mbit' or '1gbit'")
