"""Claim (docs/metrics.md, docs/deploy.md): a real Prometheus server (Debian's package) scrapes
the engine while a call runs, the engine's series come back through Prometheus' query API
with the values the call produced, and the alert rules of deploy/prometheus/ load in that
server."""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callutil import CallClient, free_port
from wsutil import running_server

CALL = {"call_size": 256, "sizes": [256], "size": 256, "voice": "en-us"}
RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is missing: "
                                "`make browsers` installs Debian's package (apt-get install prometheus)")


@contextlib.asynccontextmanager
async def prometheus(tmp: Path, target: str) -> Any:
    """Prometheus on loopback, scraping `target` (host:port) every second."""
    port = free_port()
    rules = tmp / "alerts.yml"
    shutil.copy(RULES, rules)
    (tmp / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: avatar
    static_configs: [{{targets: ["{target}"]}}]
""")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            async with asyncio.timeout(30):
                while True:
                    assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
                    with contextlib.suppress(aiohttp.ClientError):
                        async with s.get(f"{url}/-/ready") as r:
                            if r.status == 200:
                                break
                    await asyncio.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def query(url: str, promql: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/api/v1/query", params={"query": promql}) as r:
        body = await r.json()
        assert r.status == 200 and body["status"] == "success", body
        return list(body["data"]["result"])


async def value(url: str, promql: str) -> float | None:
    result = await query(url, promql)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.timeout(180)
def test_a_real_prometheus_scrapes_a_call_and_loads_the_alert_rules(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with running_server(**CALL) as server, prometheus(tmp_path, f"127.0.0.1:{server.port}") as prom:
            call = CallClient(server.http, wav=None, keep_video=False)
            assert await call.start() == 201
            assert (await call.post("say", {"text": "Prometheus is watching this call."}))[0] == 202
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30:  # until a 5 s window of scrapes lies within the call
                fps = await value(prom, 'sum(rate(avatar_stage_frames_out_total{graph="live_call",stage="render"}[5s]))')
                if fps and fps > 20 and time.monotonic() - t0 > 5:
                    break
                await asyncio.sleep(0.5)
            out["fps"] = fps
            out["calls"] = await value(prom, "avatar_calls_active")
            out["up"] = await value(prom, 'up{job="avatar"}')
            out["ready"] = await value(prom, "avatar_ready")
            out["first_frame"] = await value(prom, 'avatar_say_first_frame_seconds_count{graph="live_call"}')
            out["stages"] = {r["metric"]["stage"] for r in await query(prom, "avatar_stage_latency_seconds_count")}
            async with aiohttp.ClientSession() as s, s.get(f"{prom}/api/v1/rules") as r:
                groups = (await r.json())["data"]["groups"]
            out["rules"] = {rule["name"]: rule.get("health") for g in groups for rule in g["rules"]}
            await call.close()
            await asyncio.sleep(2.5)
            out["calls_after"] = await value(prom, "avatar_calls_active")
        return out

    out = asyncio.run(scenario())
    assert out["up"] == 1 and out["calls"] == 1 and out["ready"] == 1, out
    # the call's video at 25 fps, as Prometheus computed it from the engine's counter
    assert out["fps"] is not None and 20 <= out["fps"] <= 30, out
    assert out["first_frame"] and out["first_frame"] >= 1, out
    assert "render" in out["stages"], out
    assert len(out["rules"]) >= 5 and all(h in ("ok", "unknown") for h in out["rules"].values()), out
    assert out["calls_after"] == 0, out
