"""CPU time and resident memory of engines that run in their own processes, for Prometheus.

The server's own `process_cpu_seconds_total` leaves them out, yet on CPU the renderer's child
processes carry a large share of the work (~0.45 of a core at 4 calls of 512², cpu2)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .subprocess_engine import SubprocessEngine

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcessStats:
    cpu_seconds: float  # user + system, since the process started
    resident_bytes: int


def process_stats(pid: int) -> ProcessStats | None:
    """From /proc (Linux); None where there is no /proc or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
    return ProcessStats(cpu_seconds=(int(fields[11]) + int(fields[12])) / _TICKS,
                        resident_bytes=int(fields[21]) * _PAGE)


class EngineProcessCollector(Collector):
    """`avatar_engine_process_cpu_seconds_total{engine,replica}` and
    `avatar_engine_process_resident_memory_bytes{engine,replica}`, read at each scrape from
    the engines added (closed ones drop out)."""

    def __init__(self, namespace: str = "avatar") -> None:
        self.namespace = namespace
        self._engines: list[tuple[str, SubprocessEngine]] = []

    def add(self, replica: str, engine: SubprocessEngine) -> None:
        self._engines.append((replica, engine))

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        ns = self.namespace
        cpu = CounterMetricFamily(f"{ns}_engine_process_cpu_seconds",
                                  "CPU time of an engine's own process (user + system)",
                                  labels=["engine", "replica"])
        rss = GaugeMetricFamily(f"{ns}_engine_process_resident_memory_bytes",
                                "Resident memory of an engine's own process", labels=["engine", "replica"])
        for replica, engine in self._engines:
            pid = engine.pid
            stats = process_stats(pid) if pid is not None else None
            if stats is not None:
                cpu.add_metric([engine.name, replica], stats.cpu_seconds)
                rss.add_metric([engine.name, replica], stats.resident_bytes)
        yield cpu
        yield rss
