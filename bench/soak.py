"""Soak: a server under a mixed, changing load for a long time — does anything drift or leak?

    python -m bench.soak --minutes 60 [--size 256] [--out bench/out/soak]

One `avatar serve` process; in this process (at nice 10, so the clients do not take the CPU the
server is measured on): one long call that lives the whole run and speaks now and then (A/V
offset drift), one call that comes and goes (connect, say, interrupt, hang up or vanish), two
websocket streams that come and go (say, append, interrupt, close), and a hostile client that
every few seconds tries one of the refusals of docs/limits.md (bad SDP, unknown voices, silent
websockets, offers that never connect, oversized bodies, bad Host, cross-site requests,
message floods). Every 10 s it samples the server: resident memory (server and engine
processes), threads, open file descriptors, asyncio tasks, calls, A/V offset of the long call,
late video frames. Output: `<out>.jsonl` (samples), `<out>.png` (the plot), and a summary line.
Video is counted, not decoded (bench/call_latency.py does the same).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from callutil import CallClient, started_server  # noqa: E402

from bench.call_latency import _count_video_without_decoding  # noqa: E402

SENTENCES = ["Thanks for calling, how can I help you today?", "The weather looks fine for the rest of the week.",
             "Let me check that for you, it will only take a moment.", "Is there anything else you would like to know?"]


def _proc_figures(pid: int) -> dict[str, float]:
    threads, fds = 0, 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return {"threads": threads, "fds": fds}


def _metric(text: str, name: str, contains: str = "", **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or contains not in line:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Soak:
    def __init__(self, http: str, pid: int, size: int) -> None:
        self.http, self.pid, self.size = http, pid, size
        self.rng = random.Random(7)
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []
        self.long: CallClient | None = None

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # -- actors -----------------------------------------------------------------------------
    async def long_call(self, stop: asyncio.Event) -> None:
        c = CallClient(self.http, keep_video=False)
        assert await c.start() == 201, "the long call was refused"
        self.long = c
        while not stop.is_set():
            status, _ = await c.post("say", {"text": self.rng.choice(SENTENCES)})
            self.count(f"long_say_{status}")
            await _sleep(stop, self.rng.uniform(5, 15))
        await c.close()

    async def churn_call(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            c = CallClient(self.http, keep_video=False)
            status = await c.start()
            self.count(f"call_{status}")
            if status == 201:
                await _sleep(stop, self.rng.uniform(2, 6))
                await c.post("say", {"text": self.rng.choice(SENTENCES)})
                await _sleep(stop, self.rng.uniform(1, 5))
                if self.rng.random() < 0.5:
                    await c.post("interrupt", {})
                await _sleep(stop, self.rng.uniform(2, 20))
                await c.close(delete=self.rng.random() < 0.7)  # some just vanish
            await _sleep(stop, self.rng.uniform(0.5, 3))

    async def churn_stream(self, stop: asyncio.Event) -> None:
        ws_url = self.http.replace("http", "ws") + "/v1/stream"
        while not stop.is_set():
            try:
                async with aiohttp.ClientSession() as s, s.ws_connect(ws_url, max_msg_size=0) as ws:
                    self.count("stream")
                    await ws.send_json({"type": "config", "voice": "en-us"})
                    reader = asyncio.ensure_future(_drain_ws(ws))
                    end = time.monotonic() + self.rng.uniform(5, 40)
                    while time.monotonic() < end and not stop.is_set():
                        r = self.rng.random()
                        if r < 0.5:
                            await ws.send_json({"type": "say", "text": self.rng.choice(SENTENCES)})
                        elif r < 0.8:
                            for word in self.rng.choice(SENTENCES).split():
                                await ws.send_json({"type": "append", "text": word + " "})
                            await ws.send_json({"type": "flush"})
                        else:
                            await ws.send_json({"type": "interrupt"})
                        await _sleep(stop, self.rng.uniform(1, 6))
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
            except (aiohttp.ClientError, ConnectionError) as exc:
                self.errors.append(f"stream: {exc}")
            await _sleep(stop, self.rng.uniform(0.5, 3))

    async def hostile(self, stop: asyncio.Event) -> None:
        attacks = [self._bad_sdp, self._unknown_voice, self._silent_ws, self._offer_never_connects,
                   self._big_body, self._bad_host, self._cross_site, self._flood_ws]
        while not stop.is_set():
            attack = self.rng.choice(attacks)
            try:
                await attack()
                self.count(attack.__name__.strip("_"))
            except Exception as exc:  # noqa: BLE001 - an attack that errs on our side is noted, not fatal
                self.errors.append(f"{attack.__name__}: {type(exc).__name__}: {exc}")
            await _sleep(stop, self.rng.uniform(2, 6))

    async def _post(self, path: str, data: Any, ctype: str, **headers: str) -> int:
        async with aiohttp.ClientSession() as s, s.post(self.http + path, data=data,
                                                        headers={"Content-Type": ctype, **headers}) as r:
            await r.read()
            return r.status

    async def _bad_sdp(self) -> None:
        assert await self._post("/v1/calls", "v=0\r\nnot an offer", "application/sdp") == 400

    async def _unknown_voice(self) -> None:
        c = self.long
        if c is not None and c.location:
            body = json.dumps({"text": "Hi.", "voice": f"zz-{self.rng.random()}"[:40]})
            assert await self._post(f"{c.location}/say", body, "application/json") == 400

    async def _silent_ws(self) -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(self.http.replace("http", "ws") + "/v1/stream") as ws:
            msg = await ws.receive(timeout=30)  # the server closes it (1008) after its deadline
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)

    async def _offer_never_connects(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        await self._post("/v1/calls", pc.localDescription.sdp, "application/sdp")  # 201 or 503 (full)
        await pc.close()

    async def _big_body(self) -> None:
        assert await self._post("/v1/calls", "v=0\r\n" + "a=x\r\n" * 100_000, "application/sdp") == 413

    async def _bad_host(self) -> None:
        async with aiohttp.ClientSession() as s, s.get(self.http + "/readyz", headers={"Host": "evil.example"}) as r:
            assert r.status == 400

    async def _cross_site(self) -> None:
        c = self.long
        if c is not None and c.location:
            assert await self._post(f"{c.location}/interrupt", "", "text/plain") == 415
            assert await self._post(f"{c.location}/say", '{"text": "x"}', "application/json",
                                    Origin="http://evil.example") == 403

    async def _flood_ws(self) -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(self.http.replace("http", "ws") + "/v1/stream") as ws:
            for _ in range(200):
                await ws.send_str('{"type": "keyframe"}')
            await ws.close()

    # -- sampling ---------------------------------------------------------------------------
    async def sample(self, t0: float) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{self.http}/healthz") as r:
                health = await r.json()
            async with s.get(f"{self.http}/metrics") as r:
                metrics = await r.text()
            offset = None
            c = self.long
            if c is not None and c.location:
                async with s.get(f"{self.http}{c.location}") as r:
                    if r.status == 200:
                        offset = (await r.json())["av_offset_ms"]
        engines_rss = _metric(metrics, "avatar_engine_process_resident_memory_bytes") / 2**20
        # video frames only: dropped late on their way to the renderer, or repeated at the sink
        late = _metric(metrics, "avatar_frames_dropped_total", contains="render.in", reason="late")
        repeated = _metric(metrics, "avatar_deadline_misses_total", policy="repeat_last")
        frames = _metric(metrics, "avatar_stage_frames_out_total", stage="render")
        return {"t_min": round((time.monotonic() - t0) / 60, 2), "rss_mb": health["rss_mb"],
                "engines_rss_mb": round(engines_rss, 1), "tasks": health["tasks"], "calls": health["calls"],
                **_proc_figures(self.pid), "av_offset_ms": offset, "frames": frames, "late": late + repeated,
                "streams": _metric(metrics, "avatar_sessions_active", graph="live_talking_head")}


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def _drain_ws(ws: Any) -> None:
    async for _ in ws:
        pass


def plot(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_min"] for s in samples]
    fig, ax = plt.subplots(5, 1, figsize=(9, 11), sharex=True)
    ax[0].plot(t, [s["rss_mb"] for s in samples], label="server RSS")
    ax[0].plot(t, [s["engines_rss_mb"] for s in samples], label="renderer processes RSS")
    ax[0].set_ylabel("MB")
    ax[0].legend(loc="upper left")
    ax[1].plot(t, [s["threads"] for s in samples], label="threads")
    ax[1].plot(t, [s["fds"] for s in samples], label="open fds")
    ax[1].plot(t, [s["tasks"] for s in samples], label="asyncio tasks")
    ax[1].legend(loc="upper left")
    ax[2].plot(t, [s["av_offset_ms"] if s["av_offset_ms"] is not None else float("nan") for s in samples])
    ax[2].set_ylabel("A/V offset, long call (ms)")
    late_pct = [0.0] + [100 * (b["late"] - a["late"]) / max(1.0, b["frames"] - a["frames"])
                        for a, b in zip(samples[:-1], samples[1:])]
    ax[3].plot(t, late_pct)
    ax[3].set_ylabel("late frames per 10 s (%)")
    ax[4].step(t, [s["calls"] for s in samples], label="calls", where="post")
    ax[4].step(t, [s["streams"] for s in samples], label="streams", where="post")
    ax[4].legend(loc="upper left")
    ax[4].set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def summary(samples: list[dict[str, Any]], counts: dict[str, int], errors: list[str]) -> dict[str, Any]:
    def first_last(key: str) -> tuple[float, float]:
        vals = [s[key] for s in samples if s[key] is not None]
        k = max(1, len(vals) // 10)
        return sum(vals[:k]) / k, sum(vals[-k:]) / k

    rss0, rss1 = first_last("rss_mb")
    off = [s["av_offset_ms"] for s in samples if s["av_offset_ms"] is not None]
    frames = samples[-1]["frames"] - samples[0]["frames"]
    return {
        "minutes": samples[-1]["t_min"], "rss_first_tenth_mb": round(rss0, 1), "rss_last_tenth_mb": round(rss1, 1),
        "rss_max_mb": max(s["rss_mb"] for s in samples),
        "engines_rss_first_last_mb": [round(v, 1) for v in first_last("engines_rss_mb")],
        "threads_min_max": [min(s["threads"] for s in samples), max(s["threads"] for s in samples)],
        "fds_min_max": [min(s["fds"] for s in samples), max(s["fds"] for s in samples)],
        "tasks_min_max": [min(s["tasks"] for s in samples), max(s["tasks"] for s in samples)],
        "av_offset_ms_min_max": [min(off), max(off)] if off else None,
        "late_pct": round(100 * (samples[-1]["late"] - samples[0]["late"]) / max(1.0, frames), 3),
        "frames": frames, "actions": counts, "client_errors": errors[:10], "client_error_count": len(errors),
    }


async def main(minutes: float, size: int, out: Path) -> dict[str, Any]:
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"call_size": size, "sizes": [size], "size": size, "voice": "en-us", "max_calls": 4,
                "first_message_timeout_s": 10, "call_connect_timeout_s": 10}
    async with started_server(**settings) as server:
        os.nice(10)  # the clients: after the server has started, so only this process is niced
        _count_video_without_decoding()
        soak = Soak(server.http, server.proc.pid, size)
        stop = asyncio.Event()
        actors = [asyncio.ensure_future(a(stop)) for a in (soak.long_call, soak.churn_call, soak.churn_stream,
                                                           soak.churn_stream, soak.hostile)]
        t0 = time.monotonic()
        samples: list[dict[str, Any]] = []
        with out.with_suffix(".jsonl").open("w") as f, tqdm(total=round(minutes * 60), unit="s",
                                                             desc="soak", file=sys.stderr) as bar:
            while time.monotonic() - t0 < minutes * 60:
                await asyncio.sleep(10)
                s = await soak.sample(t0)
                samples.append(s)
                f.write(json.dumps(s) + "\n")
                f.flush()
                bar.update(round(time.monotonic() - t0) - bar.n)
                bar.set_postfix(rss=s["rss_mb"], thr=s["threads"], fds=s["fds"], off=s["av_offset_ms"])
                for a in actors:
                    if a.done() and a.exception() is not None:
                        raise RuntimeError(f"an actor failed: {a.exception()!r}")
        stop.set()
        await asyncio.gather(*actors, return_exceptions=True)
        log_tail = "".join(server.log[-20:])
        tracebacks = "".join(server.log).count("Traceback")
    result = summary(samples, soak.counts, soak.errors)
    result["server_tracebacks"] = tracebacks
    plot(samples, out.with_suffix(".png"), f"soak, {minutes:g} min, calls and streams at {size}², python -m bench.soak")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    if tracebacks:
        print(log_tail, file=sys.stderr)
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", type=Path, default=Path("bench/out/soak"))
    a = p.parse_args()
    print(json.dumps(asyncio.run(main(a.minutes, a.size, a.out))))
