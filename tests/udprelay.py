"""An impaired network between two aiortc peers, inside this process: a UDP relay that drops,
delays and reorders datagrams, spliced in by rewriting the ICE candidates of the offer and
the answer. No packet leaves the machine; nothing needs privileges.

    caller a ──► relay rB ──(drop, delay)──► server b      (the caller sees the server at rB)
    caller a ◄── relay rB ◄──(drop, delay)── relay rA ◄── server b   (the server sees it at rA)
"""
from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field

_CAND = re.compile(r"^a=candidate:(\S+) (\d) (udp) (\d+) (\S+) (\d+) typ host(.*)$", re.IGNORECASE)


@dataclass
class Impairment:
    loss: float = 0.05  # share of datagrams dropped, each direction
    delay_s: tuple[float, float] = (0.005, 0.040)  # uniform: overlapping delays reorder packets
    seed: int = 0


@dataclass
class RelayStats:
    forwarded: int = 0
    dropped: int = 0
    reordered: int = 0


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram) -> None:  # type: ignore[no-untyped-def]
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)


@dataclass
class LossyRelay:
    impairment: Impairment = field(default_factory=Impairment)
    stats: RelayStats = field(default_factory=RelayStats)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.impairment.seed)
        self._caller: tuple[str, int] | None = None  # a
        self._server: tuple[str, int] | None = None  # b
        self._a: asyncio.DatagramTransport | None = None  # rA: what the server sends to
        self._b: asyncio.DatagramTransport | None = None  # rB: what the caller sends to
        self._last_due = 0.0

    async def start(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        self._a, _ = await loop.create_datagram_endpoint(lambda: _Side(self._from_server), local_addr=(host, 0))
        self._b, _ = await loop.create_datagram_endpoint(lambda: _Side(self._from_caller), local_addr=(host, 0))

    def close(self) -> None:
        for t in (self._a, self._b):
            if t is not None:
                t.close()

    def _addr(self, t: asyncio.DatagramTransport | None) -> tuple[str, int]:
        assert t is not None
        return t.get_extra_info("sockname")[:2]

    def _forward(self, via: asyncio.DatagramTransport | None, data: bytes, to: tuple[str, int] | None) -> None:
        if via is None or to is None:
            return
        if self._rng.random() < self.impairment.loss:
            self.stats.dropped += 1
            return
        delay = self._rng.uniform(*self.impairment.delay_s)
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if due < self._last_due:
            self.stats.reordered += 1
        self._last_due = max(self._last_due, due)
        loop.call_later(delay, self._send, via, data, to)

    def _send(self, via: asyncio.DatagramTransport, data: bytes, to: tuple[str, int]) -> None:
        if not via.is_closing():
            via.sendto(data, to)
            self.stats.forwarded += 1

    def _from_caller(self, data: bytes, addr: tuple[str, int]) -> None:  # arrives at rB
        self._forward(self._a, data, self._server)

    def _from_server(self, data: bytes, addr: tuple[str, int]) -> None:  # arrives at rA
        self._forward(self._b, data, self._caller)

    # -- splicing ---------------------------------------------------------------------------
    @staticmethod
    def host_of(sdp: str) -> str:
        for line in sdp.splitlines():
            m = _CAND.match(line.strip())
            if m and ":" not in m.group(5):
                return m.group(5)
        raise ValueError("no IPv4 host candidate in the SDP")

    def _rewrite(self, sdp: str, relay: tuple[str, int]) -> tuple[str, tuple[str, int]]:
        real: tuple[str, int] | None = None
        out = []
        for line in sdp.splitlines():
            m = _CAND.match(line.strip())
            if m:
                if ":" in m.group(5):
                    continue  # IPv6: not relayed, so not offered
                if real is None:
                    real = (m.group(5), int(m.group(6)))
                line = (f"a=candidate:{m.group(1)} {m.group(2)} {m.group(3)} {m.group(4)} "
                        f"{relay[0]} {relay[1]} typ host{m.group(7)}")
            out.append(line)
        assert real is not None, "no candidate to relay"
        return "\r\n".join(out) + "\r\n", real

    def rewrite_offer(self, sdp: str) -> str:
        """The caller's offer as the server sees it: the caller at rA."""
        sdp, self._caller = self._rewrite(sdp, self._addr(self._a))
        return sdp

    def rewrite_answer(self, sdp: str) -> str:
        """The server's answer as the caller sees it: the server at rB."""
        sdp, self._server = self._rewrite(sdp, self._addr(self._b))
        return sdp
