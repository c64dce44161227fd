"""What the dashboard shows, once a second: the server's load and every session it runs.

`Sampler` runs one task on the server's loop (started with the app). Each tick it reads what
the calls (`CallRegistry`) and the websocket streams (`StreamState`) already count — frames
released, frames dropped and late per channel, the A/V offset, the caller audio -> frame
latency — and turns counters into rates over the time since the previous tick. Per-stage
latency comes from the runtime's Prometheus histograms (`avatar_stage_latency_seconds`,
`avatar_stage_queue_seconds`): their labels name the graph and the stage, never the session
(bounded cardinality, realtime/metrics.py), so a session's stage figures are those of every
session of its graph, over the last `stage_window_s` seconds.

Nothing here blocks the loop: the counters are attributes in memory, the histograms are read
with one `collect()` each, and the one file read (/proc, resident memory) runs in a thread.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)


# -- the snapshot (what the feed sends, as JSON) -------------------------------------------------
class StageStats(BaseModel):
    stage: str
    queued: int = Field(description="frames waiting now in this session's input channel(s) of the stage")
    p50_ms: float | None = Field(description="processing time of one frame, median (graph-wide, last window)")
    p99_ms: float | None = Field(description="processing time of one frame, 99th percentile (graph-wide)")
    queue_p50_ms: float | None = Field(description="time a frame waited in the stage's input, median (graph-wide)")
    queue_p99_ms: float | None = Field(description="... 99th percentile (graph-wide)")
    frames: int = Field(description="frames the stage took in the last window (graph-wide)")


class SessionStats(BaseModel):
    id: str
    kind: Literal["call", "stream"] = Field(description="a WebRTC call (/v1/calls) or a websocket stream (/v1/stream)")
    graph: str = Field(description="the recipe it runs (live_call, live_talking_head)")
    mode: str = Field(description="calls: agent or mirror; streams: tts")
    state: str = Field(description="calls: the peer connection's state; streams: starting, streaming, closing")
    age_s: float
    speaking: bool
    fps: float = Field(description="video frames sent per second, since the previous snapshot")
    frames: int = Field(description="video frames sent in all")
    drops: int = Field(description="frames dropped in all (channels of its graph, and its outgoing queue/tracks)")
    drops_per_s: float
    drop_reasons: dict[str, int] = Field(description="drops by reason (late, overflow, stale_epoch, track, send_queue)")
    late: int = Field(description="frames found past their deadline in its channels, in all")
    late_per_s: float
    av_offset_ms: float | None = Field(description="calls: how much later video reaches the encoder than audio, vs "
                                                   "media time (the call's av_offset_s); streams: none")
    engine_latency_p50_ms: float | None = Field(description="mirroring calls: caller audio in -> the frame showing "
                                                            "it released, median over the last second; else none")
    engine_latency_p99_ms: float | None
    queued_utterances: int
    stages: list[StageStats]


class ServerStats(BaseModel):
    cpu_percent: float | None = Field(description="the server process's CPU time per wall second, all threads (100 = "
                                                  "one core); the renderer's own processes are not included")
    rss_mb: float | None = Field(description="resident memory of the server process (Linux)")
    loop_lag_p50_ms: float | None = Field(description="how late the event loop woke its 50 ms timer, median since the "
                                                      "previous snapshot")
    loop_lag_p99_ms: float | None
    loop_lag_mean_ms: float | None
    calls_active: int
    calls_max: int
    streams_active: int
    streams_max: int
    draining: bool


class Snapshot(BaseModel):
    seq: int = Field(description="1, 2, ... since the server started")
    time: float = Field(description="Unix time of the snapshot, seconds")
    interval_s: float = Field(description="seconds since the previous snapshot (what the rates are over)")
    stage_window_s: float = Field(description="seconds the graph-wide stage percentiles cover")
    server: ServerStats
    sessions: list[SessionStats]


# -- histograms -----------------------------------------------------------------------------------
Buckets = dict[tuple[str, ...], list[tuple[float, float]]]  # labels -> [(le, cumulative count)], by le


def read_histogram(hist: Any, label_names: Iterable[str]) -> Buckets:
    """A prometheus_client Histogram (all its children) -> cumulative bucket counts by labels."""
    names = tuple(label_names)
    out: dict[tuple[str, ...], list[tuple[float, float]]] = {}
    for family in hist.collect():
        for s in family.samples:
            if not s.name.endswith("_bucket"):
                continue
            key = tuple(s.labels.get(n, "") for n in names)
            out.setdefault(key, []).append((float(s.labels["le"]), float(s.value)))
    for v in out.values():
        v.sort()
    return out


def delta(now: list[tuple[float, float]], before: list[tuple[float, float]] | None) -> list[tuple[float, float]]:
    if not before:
        return now
    prev = dict(before)
    return [(le, max(0.0, c - prev.get(le, 0.0))) for le, c in now]


def quantile_ms(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of cumulative buckets, interpolated inside its bucket (as PromQL's
    histogram_quantile), in ms; None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_le, lower_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank and c > lower_c:
            if math.isinf(le):
                return round(1000 * lower_le, 2)  # above the largest bound: say the bound
            return round(1000 * (lower_le + (le - lower_le) * (rank - lower_c) / (c - lower_c)), 2)
        if not math.isinf(le):
            lower_le, lower_c = le, c
    return round(1000 * lower_le, 2)


def _pct_ms(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 1)


# -- the sampler ----------------------------------------------------------------------------------
class Sampler:
    """Takes a snapshot every `interval_s`, keeps the last `keep` of them (the page's plots
    start with that history) and hands each to the feed's subscribers."""

    def __init__(self, registry: Any, streams: Any, *, interval_s: float = 1.0, keep: int = 300,
                 stage_window_s: float = 5.0) -> None:
        self.registry, self.streams = registry, streams
        self.metrics = streams.metrics
        self.interval_s, self.stage_window_s = interval_s, stage_window_s
        self.history: deque[Snapshot] = deque(maxlen=keep)
        self.subscribers: set[asyncio.Queue[Snapshot | None]] = set()
        self._seq = 0
        self._last_t: float | None = None
        self._last_cpu: float | None = None
        self._prev: dict[str, tuple[int, int, int]] = {}  # session id -> (frames, drops, late)
        self._prev_lag: list[tuple[float, float]] | None = None
        self._prev_lag_sum = (0.0, 0.0)
        self._stage_hist: deque[tuple[float, Buckets, Buckets]] = deque()  # (t, compute, queue)
        self._task: asyncio.Task[None] | None = None

    # -- lifetime ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dashboard-sampler")

    async def stop(self) -> None:
        for q in list(self.subscribers):
            self._offer(q, None)  # feeds end
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self) -> asyncio.Queue[Snapshot | None]:
        q: asyncio.Queue[Snapshot | None] = asyncio.Queue(maxsize=8)
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Snapshot | None]) -> None:
        self.subscribers.discard(q)

    @staticmethod
    def _offer(q: asyncio.Queue[Snapshot | None], item: Snapshot | None) -> None:
        """A reader that does not keep up loses its oldest snapshots, never the server memory."""
        while q.full():
            q.get_nowait()
        q.put_nowait(item)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                snap = await self.sample()
            except Exception:  # noqa: BLE001 - one bad tick must not end the dashboard
                log.exception("dashboard snapshot failed")
            else:
                self.history.append(snap)
                for q in list(self.subscribers):
                    self._offer(q, snap)
            next_at = max(next_at + self.interval_s, loop.time() + 0.1 * self.interval_s)
            await asyncio.sleep(next_at - loop.time())

    # -- one snapshot --------------------------------------------------------------------------
    async def sample(self) -> Snapshot:
        from ..health import resident_mb

        rss = await asyncio.to_thread(resident_mb)  # reads /proc: off the loop
        now = time.monotonic()
        dt = (now - self._last_t) if self._last_t is not None else None
        self._last_t = now
        cpu = time.process_time()  # clock_gettime(CLOCK_PROCESS_CPUTIME_ID): no file, no wait
        cpu_pct = round(100 * (cpu - self._last_cpu) / dt, 1) if dt and self._last_cpu is not None else None
        self._last_cpu = cpu
        stages = self._stage_windows(now)
        sessions = [*self._calls(now, dt, stages), *self._streams(now, dt, stages)]
        live = {s.id for s in sessions}
        for gone in set(self._prev) - live:
            del self._prev[gone]
        self._seq += 1
        return Snapshot(seq=self._seq, time=round(time.time(), 3), interval_s=round(dt or 0.0, 3),
                        stage_window_s=self.stage_window_s, server=self._server(cpu_pct, rss), sessions=sessions)

    def _server(self, cpu_pct: float | None, rss: float | None) -> ServerStats:
        lag = read_histogram(self.metrics.loop_lag, ()).get((), [])
        window = delta(lag, self._prev_lag) if self._prev_lag is not None else []
        self._prev_lag = lag
        s, c = _sum_count(self.metrics.loop_lag)
        ds, dc = s - self._prev_lag_sum[0], c - self._prev_lag_sum[1]
        self._prev_lag_sum = (s, c)
        reg, st = self.registry, self.streams
        return ServerStats(cpu_percent=cpu_pct, rss_mb=rss, loop_lag_p50_ms=quantile_ms(window, 0.5),
                           loop_lag_p99_ms=quantile_ms(window, 0.99),
                           loop_lag_mean_ms=round(1000 * ds / dc, 2) if dc > 0 and window else None,
                           calls_active=len(reg.calls), calls_max=reg.settings.max_calls,
                           streams_active=len(st.connections), streams_max=st.settings.max_connections,
                           draining=bool(reg.draining or st.draining))

    def _stage_windows(self, now: float) -> dict[tuple[str, str], tuple[list[tuple[float, float]], ...]]:
        """(graph, stage) -> (compute buckets, queue buckets) over the last stage_window_s."""
        compute = read_histogram(self.metrics.stage_latency, ("graph", "stage"))
        queue = read_histogram(self.metrics.stage_queue, ("graph", "stage"))
        self._stage_hist.append((now, compute, queue))
        while len(self._stage_hist) > 1 and now - self._stage_hist[1][0] >= self.stage_window_s:
            self._stage_hist.popleft()
        _, old_c, old_q = self._stage_hist[0]
        if len(self._stage_hist) == 1:
            old_c, old_q = {}, {}  # first tick: everything so far
        keys = set(compute) | set(queue)
        return {k: (delta(compute.get(k, []), old_c.get(k)), delta(queue.get(k, []), old_q.get(k)))  # type: ignore[misc]
                for k in keys}

    def _stage_list(self, session: Any, windows: dict[tuple[str, str], tuple[list[tuple[float, float]], ...]]
                    ) -> list[StageStats]:
        g = session.graph
        out = []
        for name in g.stages:
            queued = sum(session.channels[lk.name].qsize() for lk in g.links if lk.dst == name)
            comp, que = windows.get((g.name, name), ([], []))
            out.append(StageStats(stage=name, queued=queued, p50_ms=quantile_ms(comp, 0.5),
                                  p99_ms=quantile_ms(comp, 0.99), queue_p50_ms=quantile_ms(que, 0.5),
                                  queue_p99_ms=quantile_ms(que, 0.99), frames=int(comp[-1][1]) if comp else 0))
        return out

    def _rates(self, sid: str, frames: int, drops: int, late: int, dt: float | None,
               age: float) -> tuple[float, float, float]:
        prev = self._prev.get(sid)
        self._prev[sid] = (frames, drops, late)
        if prev is None or not dt:  # new: averages since it started
            span = max(age, 1e-3)
            return round(frames / span, 2), round(drops / span, 2), round(late / span, 2)
        return (round((frames - prev[0]) / dt, 2), round(max(0, drops - prev[1]) / dt, 2),
                round(max(0, late - prev[2]) / dt, 2))

    def _calls(self, now: float, dt: float | None, windows: Any) -> list[SessionStats]:
        out = []
        for call in list(self.registry.calls.values()):
            session = call.session
            if session is None:
                continue
            reasons = _drops(session.channels.values())
            for kind, track in (("video", call.video_track), ("audio", call.audio_track)):
                if track.dropped:
                    reasons[f"{kind}_track"] = track.dropped
            late = sum(ch.stats.late for ch in session.channels.values())
            frames = call.video_track.released
            drops = sum(reasons.values())
            age = now - call.created
            fps, dps, lps = self._rates(call.id, frames, drops, late, dt, age)
            lat = call.engine_latency(50) if call.mode == "mirror" else []  # ~the last second of 20 ms chunks
            out.append(SessionStats(
                id=call.id, kind="call", graph=session.graph.name, mode=call.mode, state=call.pc.connectionState,
                age_s=round(age, 1), speaking=call.speaking, fps=fps, frames=frames, drops=drops, drops_per_s=dps,
                drop_reasons=reasons, late=late, late_per_s=lps, av_offset_ms=round(1000 * call.av_offset_s, 1),
                engine_latency_p50_ms=_pct_ms(lat, 0.5), engine_latency_p99_ms=_pct_ms(lat, 0.99),
                queued_utterances=len(call.queued), stages=self._stage_list(session, windows)))
        return out

    def _streams(self, now: float, dt: float | None, windows: Any) -> list[SessionStats]:
        out = []
        for conn in list(self.streams.connections):
            media = conn.media
            if media is None:
                continue  # connected, not started (no config or say yet): nothing to show
            session = media.session
            reasons = _drops(session.channels.values())
            if conn.queue.stats.video_dropped:
                reasons["send_queue"] = conn.queue.stats.video_dropped
            late = sum(ch.stats.late for ch in session.channels.values())
            frames = media.live.stream.stats.video_frames
            drops = sum(reasons.values())
            age = now - media.started_at
            fps, dps, lps = self._rates(conn.id, frames, drops, late, dt, age)
            closing = bool(getattr(conn, "_closing", False))
            out.append(SessionStats(
                id=conn.id, kind="stream", graph=session.graph.name, mode="tts",
                state="closing" if closing else ("streaming" if frames else "starting"), age_s=round(age, 1),
                speaking=bool(conn.utterances), fps=fps, frames=frames, drops=drops, drops_per_s=dps,
                drop_reasons=reasons, late=late, late_per_s=lps, av_offset_ms=None, engine_latency_p50_ms=None,
                engine_latency_p99_ms=None, queued_utterances=len(conn.utterances),
                stages=self._stage_list(session, windows)))
        return out


def _drops(channels: Iterable[Any]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for ch in channels:
        for reason, n in ch.stats.dropped.items():
            reasons[reason] = reasons.get(reason, 0) + n
    return reasons


def _sum_count(hist: Any) -> tuple[float, float]:
    s = c = 0.0
    for family in hist.collect():
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                s += sample.value
            elif sample.name.endswith("_count"):
                c += sample.value
    return s, c
