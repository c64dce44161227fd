"""Claim (docs/metrics.md): during calls and streams `/metrics` exposes every metric of the
table, with samples for those a running call produces; and label cardinality stays bounded —
after 100 calls the server has no more series than after a few, and no label names a call."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from callutil import CallClient
from pipelines.speech.tts import SpeechSynthesizer
from wsutil import running_server

CALL = {"call_size": 256, "sizes": [256], "size": 256, "voice": "en-us", "max_calls": 4}
TABLE = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
# produced by any running call: each must have samples, not only a HELP line
DURING_A_CALL = {
    "avatar_stage_latency_seconds", "avatar_stage_queue_seconds", "avatar_stage_frames_in_total",
    "avatar_stage_frames_out_total", "avatar_sessions_active", "avatar_calls_active", "avatar_calls_max",
    "avatar_ready", "avatar_draining", "avatar_call_av_offset_seconds", "avatar_event_loop_lag_seconds",
    "avatar_engine_batch_items", "avatar_engine_queue_seconds", "avatar_engine_compute_seconds",
    "avatar_engine_latency_seconds", "avatar_say_first_frame_seconds", "avatar_channel_queue_depth",
    "process_cpu_seconds_total", "process_resident_memory_bytes",
    "avatar_engine_process_cpu_seconds_total", "avatar_engine_process_resident_memory_bytes",
}


def documented() -> dict[str, str]:
    """Metric name -> its row's "when" column, from the table in docs/metrics.md."""
    out = {}
    for line in TABLE.read_text().splitlines():
        m = re.match(r"\|\s*`((?:avatar|process)_[a-z_]+)`\s*\|", line)
        if m:
            out[m.group(1)] = line
    return out


def families(text: str) -> dict[str, int]:
    """Family name (counters with their `_total`) -> number of samples (series, histogram
    buckets included) in an exposition; the `_created` timestamps left out."""
    sample_to_family: dict[str, str] = {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if name.endswith("_created"):
                continue
            if kind == "counter":
                fam = name if name.endswith("_total") else name + "_total"
                sample_to_family[fam] = fam
            elif kind == "histogram":
                fam = name
                for suffix in ("_bucket", "_sum", "_count"):
                    sample_to_family[name + suffix] = fam
            else:
                fam = sample_to_family[name] = name
            out.setdefault(fam, 0)
    for line in text.splitlines():
        if line and not line.startswith("#"):
            fam = sample_to_family.get(re.split(r"[{ ]", line, maxsplit=1)[0])
            if fam is not None:
                out[fam] += 1
    return out


def _speech(path: Path) -> str:
    synth = SpeechSynthesizer("en-us+m3")
    audio = np.concatenate([np.zeros(4000, np.float32), synth.synthesize("Pack my box with five dozen liquor "
                                                                         "jugs, and then some more.").audio])
    sf.write(path, np.concatenate([audio, audio]), 22050)
    return str(path)


async def _metrics(http: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{http}/metrics") as r:
        assert r.status == 200
        return await r.text()


async def _until_video(call: CallClient, n: int = 1) -> None:
    async with asyncio.timeout(20):
        while len(call.got.video) < n:
            await asyncio.sleep(0.05)


@pytest.mark.timeout(240)
def test_every_documented_metric_is_exposed_during_calls_and_labels_stay_bounded(tmp_path: Path) -> None:
    wav = _speech(tmp_path / "mic.wav")

    async def scenario() -> tuple[str, str, str, list[str]]:
        async with running_server(**CALL) as server:
            mirror = CallClient(server.http, wav=wav, mode="mirror", keep_video=False)
            agent = CallClient(server.http, wav=None, keep_video=False)
            assert await mirror.start() == 201 and await agent.start() == 201
            await asyncio.gather(_until_video(mirror), _until_video(agent))
            assert (await agent.post("say", {"text": "Hello there, operator."}))[0] == 202
            await asyncio.sleep(3.0)
            during = await _metrics(server.http)
            ids = [mirror.location.rsplit("/", 1)[1], agent.location.rsplit("/", 1)[1]]  # type: ignore[union-attr]
            await mirror.close()
            await agent.close()
            after_few = await _metrics(server.http)
            for i in range(100):  # short calls: answered, first frame, hung up
                c = CallClient(server.http, wav=None, keep_video=False)
                assert await c.start() == 201, i
                await _until_video(c)
                ids.append(c.location.rsplit("/", 1)[1])  # type: ignore[union-attr]
                await c.close()
            after_many = await _metrics(server.http)
            return during, after_few, after_many, ids

    during, after_few, after_many, ids = asyncio.run(scenario())
    exposed, table = families(during), documented()
    assert len(table) >= 30, "the table in docs/metrics.md was not found"
    missing = [n for n, row in table.items() if n not in exposed and "CUDA" not in row]
    assert not missing, f"documented but not exposed: {missing}"
    empty = [n for n in DURING_A_CALL if not exposed.get(n)]
    assert not empty, f"no samples during a call: {empty}"
    undocumented = [n for n in exposed if n.startswith("avatar_") and n not in table]
    assert not undocumented, f"exposed but not in docs/metrics.md: {undocumented}"
    # bounded: 100 more calls add no series, and no label value is a call id
    # (a label per call would add 100s; a drop reason seen for the first time adds a few)
    few, many = families(after_few), families(after_many)
    grown = {n: (few.get(n, 0), c) for n, c in many.items() if n.startswith("avatar_") and c > few.get(n, 0)}
    assert sum(c - f for f, c in grown.values()) < 50, f"series grew over 100 calls: {grown}"
    leaked = [i for i in ids if i in after_many]
    assert not leaked, f"call ids in labels: {leaked[:3]}"
