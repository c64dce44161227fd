"""One `/v1/stream` websocket: its messages in, its session's events and media out.

The connection owns a `realtime.Session` of the live talking-head recipe (started by the
first message), a `SendQueue` with one writer task, and a stats task. Everything the client
sends is checked here — JSON, schema, rate, text length, queue length — and answered with an
`error` event; only binary messages (1003), oversized messages (1009, by aiohttp), a slow
reader (4008) and a failed session (1011) close the connection. Closing, for any reason,
cancels the session and every task of the connection: nothing outlives `serve()`.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

from aiohttp import WSMsgType, web
from pydantic import BaseModel, ValidationError

from pipelines.media.live import EncodedPacket, H264Encoder, OpusEncoder, PcmEncoder
from pipelines.recipes.live_talking_head import LiveTalkingHead, live_talking_head_graph
from realtime import AnyEvent, RuntimeMetrics, Session, SessionFailed, SessionMetrics

from ..limits import TokenBucket, has_words
from ..resources import SharedEngines, Unavailable
from ..settings import ServerSettings
from . import framing
from .protocol import (CLIENT_MESSAGES, Append, AudioInfo, CloseCode, Config, Done, Error, ErrorCode, Flush,
                       Interrupt, Keyframe, Limits, Queued, Ready, Say, Started, Stats, VideoInfo, Viseme, Word,
                       encode_event)
from .sendqueue import SendQueue, SlowConsumer

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Media:
    """What the running stream needs to know about itself."""

    live: LiveTalkingHead
    session: Session
    fps: int
    started_at: float
    video_end: float = 0.0  # media time up to which video was handed to the send queue
    audio_end: float = 0.0
    pending_done: list[Done] = field(default_factory=list)


class StreamConnection:
    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, *, settings: ServerSettings,
                 engines: SharedEngines, metrics: RuntimeMetrics, conn_id: str) -> None:
        self.ws, self.settings, self.engines, self.metrics, self.id = ws, settings, engines, metrics, conn_id
        self._transport = transport
        clock = time.monotonic
        self.queue = SendQueue(max_bytes=settings.send_queue_bytes, video_bytes=settings.video_queue_bytes,
                               max_lag_s=settings.slow_client_timeout_s, clock=clock,
                               on_need_keyframe=self._need_keyframe)
        self.bucket = TokenBucket(settings.messages_per_second, settings.message_burst, clock)
        self.media: _Media | None = None
        self.utterances: dict[str, int] = {}  # queued or speaking -> the epoch it was queued in
        self._said_at: deque[float] = deque(maxlen=64)  # say times of utterances not yet on screen
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session_task: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._closing = False
        self._heard = False  # any message came (the first-message deadline)
        self.close_code: int | None = None

    # -- lifetime --------------------------------------------------------------------------
    async def serve(self) -> None:
        """Runs until the websocket closes; then nothing of this connection is left running."""
        self._spawn(self._write_loop(), "writer")
        self._spawn(self._first_message_deadline(), "first-message")
        try:
            await self._read_loop()
        finally:
            await self._stop_media()
            for t in list(self._tasks):
                if t is not self._closer:
                    t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)  # the closer ends by itself
            if not self.ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(code=self.close_code or CloseCode.NORMAL), 5.0)

    async def _first_message_deadline(self) -> None:
        """A connection that says nothing holds one of `max_connections` slots: not for long."""
        await asyncio.sleep(self.settings.first_message_timeout_s)
        if not self._heard:
            self.close(CloseCode.POLICY_VIOLATION,
                       f"no message within {self.settings.first_message_timeout_s:g} s of connecting")

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        task.set_name(f"{self.id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _stop_media(self) -> None:
        task, self._session_task = self._session_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def close(self, code: CloseCode, reason: str) -> None:
        """Close from anywhere (also from inside a stage's callback): never waits."""
        if self._closing:
            return
        self._closing = True
        self.close_code = int(code)
        log.info("%s: closing %d (%s)", self.id, code, reason)
        self._closer = self._spawn(self._close(code, reason), "close")

    async def _close(self, code: CloseCode, reason: str) -> None:
        await self._stop_media()
        # A slow reader's socket may not take even the close frame: it is written without
        # waiting for the socket to drain, after everything queued in the transport, and the
        # client gets `grace` seconds to read up to it. A socket that still holds unsent data
        # then is dropped (the client sees 1006), so a reader that never comes back costs
        # nothing for long.
        grace = 3 * self.settings.slow_client_timeout_s
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120], drain=False), grace)
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        while self._unsent() and loop.time() < end:
            await asyncio.sleep(0.2)
        if self._unsent() and self._transport is not None:
            self._transport.abort()

    def _unsent(self) -> int:
        """Bytes the transport still holds for a client that does not read."""
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    # -- client -> server ------------------------------------------------------------------
    async def _read_loop(self) -> None:
        async for msg in self.ws:
            self._heard = True
            if self._closing:
                break
            if msg.type == WSMsgType.TEXT:
                await self._on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.close(CloseCode.UNSUPPORTED_DATA, "binary messages are not accepted; send JSON text")
                break
            elif msg.type == WSMsgType.ERROR:  # aiohttp has closed it (e.g. 1009 message too big)
                self.close_code = self.ws.close_code
                break

    async def _on_text(self, data: str) -> None:
        try:
            raw = json.loads(data)  # bounded by max_message_bytes; parsed first so errors can name the id
        except ValueError as exc:
            raw = exc
        ident = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
        if not self.bucket.take():
            return self._error(ErrorCode.RATE_LIMITED, f"over {self.settings.messages_per_second:g} messages "
                                                       f"per second (burst {self.settings.message_burst}); dropped",
                               ident=ident)
        if isinstance(raw, ValueError):
            return self._error(ErrorCode.INVALID_JSON, f"not JSON: {raw}")
        if not isinstance(raw, dict):
            return self._error(ErrorCode.INVALID_JSON, "a message is one JSON object with a 'type'")
        try:
            msg = CLIENT_MESSAGES.validate_python(raw)
        except ValidationError as exc:
            return self._invalid(exc, raw)
        if isinstance(msg, Config):
            if self.media is not None:
                return self._error(ErrorCode.ALREADY_STARTED, "config is only accepted before the stream starts")
            await self._start(msg)
            return
        if self.media is None and not await self._start(Config()):
            return
        if isinstance(msg, Say):
            await self._say(msg)
        elif isinstance(msg, Append):
            await self._append(msg)
        elif isinstance(msg, Flush):
            self._live.text.flush()
        elif isinstance(msg, Interrupt):
            self._interrupt()
        elif isinstance(msg, Keyframe):
            self._live.stream.request_keyframe(0)

    def _invalid(self, exc: ValidationError, raw: dict[str, object]) -> None:
        errors = exc.errors()
        if any(e["type"] == "union_tag_invalid" for e in errors):
            return self._error(ErrorCode.UNKNOWN_TYPE, f"unknown message type {str(raw.get('type'))[:40]!r}; "
                                                       "expected config, say, append, flush, interrupt or keyframe")
        parts = []
        for e in errors[:5]:
            loc = ".".join(str(x) for x in e["loc"][1:]) or "type"
            parts.append(f"{loc}: {e['msg']}")
        ident = raw.get("id") if isinstance(raw.get("id"), str) else None
        self._error(ErrorCode.INVALID_MESSAGE, "; ".join(parts), ident=ident)

    @property
    def _live(self) -> LiveTalkingHead:
        assert self.media is not None
        return self.media.live

    async def _check_voice(self, voice: str | None, ident: str | None) -> bool:
        if voice is None:
            return True
        try:
            await self.engines.voice(voice)
        except Unavailable as exc:
            self._error(ErrorCode.UNAVAILABLE, str(exc), ident=ident)
            return False
        return True

    async def _speech_wait(self, voice: str | None, ident: str) -> float | None | bool:
        """Admission (SharedEngines.speech_admission): the expected wait of its first words
        (None when short), or False when it is refused (an error `busy` was sent)."""
        try:
            admission = await self.engines.speech_admission(voice or self._live.text.default_voice)
        except Unavailable:
            return None
        if admission.refusal is not None:
            self._error(ErrorCode.BUSY, admission.refusal, ident=ident)
            return False
        return admission.notice_s

    def _new_utterance(self, ident: str | None, text: str) -> str | None:
        """Checks that apply to a new utterance; its id, or None (an error was sent)."""
        if len(text) > self.settings.max_text_chars:
            self._error(ErrorCode.TEXT_TOO_LONG, f"text of {len(text)} characters is over the limit of "
                                                 f"{self.settings.max_text_chars}", ident=ident)
            return None
        if len(self.utterances) >= self.settings.max_queued_utterances:
            self._error(ErrorCode.QUEUE_FULL, f"{len(self.utterances)} utterances are already queued (limit "
                                              f"{self.settings.max_queued_utterances}); wait for a done",
                        ident=ident)
            return None
        ident = ident or f"u{next(self._ids)}"
        if ident in self.utterances:
            self._error(ErrorCode.DUPLICATE_ID, f"utterance {ident!r} is still queued or speaking", ident=ident)
            return None
        return ident

    async def _say(self, msg: Say) -> None:
        said = time.monotonic()
        if not has_words(msg.text):
            return self._error(ErrorCode.INVALID_MESSAGE, "text: nothing to say (no letters or digits)", ident=msg.id)
        if not await self._check_voice(msg.voice, msg.id):
            return
        ident = self._new_utterance(msg.id, msg.text)
        if ident is None:
            return
        wait = await self._speech_wait(msg.voice, ident)
        if wait is False:
            return
        self.utterances[ident] = self.media.session.epoch  # type: ignore[union-attr]
        self._live.text.say(ident, msg.text, msg.voice)
        self._said_at.append(said)
        self._event(Queued(id=ident, position=len(self.utterances) - 1, expected_wait_s=wait))

    async def _append(self, msg: Append) -> None:
        text = self._live.text
        open_id = text.open_utterance
        if open_id is not None and msg.id in (None, open_id):
            if text.open_chars + len(msg.text) > self.settings.max_text_chars:
                return self._error(ErrorCode.TEXT_TOO_LONG, f"this append run would be over "
                                                            f"{self.settings.max_text_chars} characters", ident=open_id)
            text.append(open_id, msg.text)
            return
        said = time.monotonic()
        if not await self._check_voice(msg.voice, msg.id):
            return
        if open_id is not None:
            text.flush()  # a new id closes the open run
        ident = self._new_utterance(msg.id, msg.text)
        if ident is None:
            return
        wait = await self._speech_wait(msg.voice, ident)
        if wait is False:
            return
        self.utterances[ident] = self.media.session.epoch  # type: ignore[union-attr]
        text.append(ident, msg.text, msg.voice)
        self._said_at.append(said)
        self._event(Queued(id=ident, position=len(self.utterances) - 1, expected_wait_s=wait))

    def _interrupt(self) -> None:
        media = self.media
        assert media is not None
        media.session.interrupt()
        media.live.text.clear()
        self._said_at.clear()
        now = media.video_end
        for ident in list(self.utterances):
            self._event(Done(id=ident, media_time=round(now, 3), interrupted=True))
        self.utterances.clear()
        media.pending_done.clear()

    # -- the session -------------------------------------------------------------------------
    async def _start(self, cfg: Config) -> bool:
        s = self.settings
        size, fps = cfg.size or s.size, cfg.fps or s.fps
        audio, avatar, voice = cfg.audio or s.audio, cfg.avatar or s.avatar, cfg.voice or s.voice
        try:
            renderer = await self.engines.renderer(avatar, size)
            tts = await self.engines.voice(voice)
            codecs = await self.engines.codecs()
        except Unavailable as exc:
            self._error(ErrorCode.UNAVAILABLE, str(exc))
            return False
        if self._closing:
            return False
        live = live_talking_head_graph(
            voices=self.engines.tts, default_voice=voice, renderer=renderer, sample_rate=tts.sample_rate, fps=fps,
            video=lambda: H264Encoder(size, size, fps, crf=s.video_crf, gop_s=s.keyframe_interval_s),
            audio=OpusEncoder if audio == "opus" else PcmEncoder, deliver=self._deliver, seed=cfg.seed or 0,
            lookahead_frames=s.lookahead_frames, latency_budget_s=s.latency_budget_s)
        session = Session(live.graph, paced=True, metrics=self.metrics, session_id=self.id, on_event=self._on_event)
        session.subscribe(SessionMetrics(self.metrics, live.graph.name))
        self.media = _Media(live, session, fps, time.monotonic())
        atb = Fraction(1, 48000)
        self._event(Ready(
            session=self.id, avatar=avatar, voice=voice,
            video=VideoInfo(codec_string=codecs.h264_codec_string, width=size, height=size, fps=fps,
                            time_base=(1, fps)),
            audio=AudioInfo(codec="opus" if audio == "opus" else "pcm_s16le", sample_rate=48000,
                            time_base=(atb.numerator, atb.denominator),
                            preskip=codecs.opus_preskip if audio == "opus" else 0),
            limits=Limits(max_message_bytes=s.max_message_bytes, max_text_chars=s.max_text_chars,
                          max_queued_utterances=s.max_queued_utterances, messages_per_second=s.messages_per_second,
                          message_burst=s.message_burst, send_queue_bytes=s.send_queue_bytes,
                          slow_client_timeout_s=s.slow_client_timeout_s,
                          first_message_timeout_s=s.first_message_timeout_s)))
        self._session_task = self._spawn(self._run_session(session), "session")
        self._spawn(self._stats_loop(), "stats")
        return True

    async def _run_session(self, session: Session) -> None:
        try:
            await session.run()
        except SessionFailed as failed:
            self._error(ErrorCode.SESSION_FAILED, f"the stream failed ({failed.stage}: "
                                                  f"{' '.join(str(failed.error).split())[:200]})", fatal=True)
            self.close(CloseCode.INTERNAL_ERROR, "session failed")

    def _on_event(self, e: AnyEvent) -> None:
        media, data = self.media, e.data
        if media is None:
            return
        ident = data.get("utterance_id")
        if ident is None or self.utterances.get(ident) != data.get("epoch", -1):
            return  # not ours (any more): interrupted, or a session-level event
        if e.kind == "utterance_started":
            media.live.stream.request_keyframe(round(data["media_time"] * media.fps), utterance_start=True)
            self._event(Started(id=ident, media_time=round(data["media_time"], 4), text=data["text"]))
        elif e.kind == "word":
            self._event(Word(id=ident, text=data["text"], char_start=data["char_start"], char_end=data["char_end"],
                             start=round(data["start"], 4), end=round(data["end"], 4)))
        elif e.kind == "visemes":
            for v, p, start, end in data["items"]:
                self._event(Viseme(id=ident, viseme=v, phoneme=p, start=round(start, 4), end=round(end, 4)))
        elif e.kind == "segment_failed":
            self._error(ErrorCode.SYNTHESIS_FAILED, data["message"], ident=ident)
        elif e.kind == "utterance_done":
            media.pending_done.append(Done(id=ident, media_time=round(data["media_time"], 4)))
            self._release_done()

    def _release_done(self) -> None:
        """`done` goes out once all media up to its time has been queued before it."""
        media = self.media
        assert media is not None
        while media.pending_done:
            d = media.pending_done[0]
            if media.video_end + 1e-6 < d.media_time or media.audio_end + 1e-6 < d.media_time:
                return
            media.pending_done.pop(0)
            self.utterances.pop(d.id, None)
            self._event(d)

    # -- server -> client --------------------------------------------------------------------
    def _deliver(self, packets: list[EncodedPacket]) -> None:
        """Called by the session's stream sink, on the loop, with freshly encoded packets."""
        media = self.media
        if media is None or self._closing:
            return
        try:
            for p in packets:
                flags = (framing.KEYFRAME if p.keyframe else 0) | (framing.START if p.start else 0)
                if p.stream == "video":
                    if p.start and self._said_at:  # an utterance's first frame: say -> first frame
                        self.metrics.say_first_frame.labels(media.session.graph.name).observe(
                            time.monotonic() - self._said_at.popleft())
                    self.queue.push_video(flags, p.pts, p.duration, p.data)
                    media.video_end = max(media.video_end, p.end)
                else:
                    self.queue.push_audio(flags, p.pts, p.duration, p.data)
                    media.audio_end = max(media.audio_end, p.end)
        except SlowConsumer as exc:
            return self._slow(exc)
        self._release_done()

    def _event(self, event: BaseModel) -> None:
        if self._closing:
            return
        try:
            self.queue.push_event(encode_event(event))
        except SlowConsumer as exc:
            self._slow(exc)

    def _error(self, code: ErrorCode, message: str, *, ident: str | None = None, fatal: bool = False) -> None:
        self._event(Error(code=code, message=message, id=ident, fatal=fatal))

    def _slow(self, exc: SlowConsumer) -> None:
        self.queue.clear()  # what it could not read is dropped; memory goes back at once
        self.close(CloseCode.SLOW_CONSUMER, f"slow consumer: {exc}")

    def _need_keyframe(self) -> None:
        if self.media is not None:
            self.media.live.stream.request_keyframe(0)

    async def _write_loop(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if isinstance(item.data, str):
                    await self.ws.send_str(item.data)
                else:
                    await self.ws.send_bytes(item.data)
            except (ConnectionError, RuntimeError):
                return  # closing: the read loop ends the connection

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stats_interval_s)
            media = self.media
            if media is None or self._closing:
                continue
            try:
                self.queue.check()
            except SlowConsumer as exc:
                return self._slow(exc)
            sink = media.live.stream.stats
            late = sum(c.stats.late for c in media.session.channels.values())
            wall = time.monotonic() - media.started_at
            self._event(Stats(media_time=round(media.video_end, 3), wall_time=round(wall, 3),
                              video_frames=sink.video_frames, keyframes=sink.keyframes,
                              audio_packets=sink.audio_packets, bytes_sent=self.queue.stats.sent_bytes,
                              video_dropped=self.queue.stats.video_dropped, frames_late=late,
                              queue_bytes=self.queue.bytes, queued_utterances=len(self.utterances)))
