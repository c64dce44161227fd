"""One call: a peer connection, the avatar's two tracks, and the call's graph.

Lifecycle: `accept(offer)` answers the caller's SDP and starts the session (the avatar is
alive from then on, at full frame rate). `say`, `interrupt` and `set_mode` drive it (HTTP or
data channel). `close()` ends everything it holds — session, tracks, peer connection, the
tasks reading the caller's media — and is idempotent; it runs on DELETE, on a stage failure,
and when the peer vanishes (ICE/DTLS failed or closed, or nothing heard for `peer_timeout_s`).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from pipelines.recipes.live_call import LiveCall, live_call_graph
from realtime import AnyEvent, Clock, MonotonicClock, RuntimeMetrics, Session, SessionFailed, SessionMetrics

from ..limits import MAX_JSON_BODY_BYTES, TokenBucket, has_words
from ..requests import ApiError, describe
from ..resources import Unavailable
from .events import BargeIn
from .ice_cleanup import ice_connections, stop_orphan_consent_checks
from .media import MicSource, TrackSink
from .perception import CallPerception
from .protocol import Mode
from .tracks import ClockedTrack, Release
from .video_encoder import install as install_vp8
from .video_encoder import negotiated_video_codec

log = logging.getLogger(__name__)
MAX_DATA_CHANNELS = 4  # a caller opens one ("control"); more are refused


class OfferError(ValueError):
    """The caller's SDP offer cannot be answered (400)."""


def check_offer(sdp: str, *, max_bytes: int) -> None:
    if len(sdp.encode()) > max_bytes:
        raise OfferError(f"SDP offer is {len(sdp.encode())} bytes, over the limit of {max_bytes}")
    lines = [ln.strip() for ln in sdp.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("v=0"):
        raise OfferError("not an SDP offer (it must start with v=0)")
    media = [ln.split()[0][2:] for ln in lines if ln.startswith("m=")]
    if not any(m in ("audio", "video") for m in media):
        raise OfferError("the offer has no audio or video section: nothing to send the avatar on")


class Call:
    def __init__(self, call_id: str, *, engines: Any, settings: Any, metrics: RuntimeMetrics,
                 mode: Mode = "agent", on_closed: Callable[[Call], None] | None = None,
                 clock: Clock | None = None) -> None:
        self.id = call_id
        self.engines, self.settings, self.metrics = engines, settings, metrics
        self.mode: Mode = mode
        self.created = time.monotonic()
        self._on_closed = on_closed
        self._clock = clock or MonotonicClock()  # a FakeClock in the timeline tests
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.audio_track = ClockedTrack("audio", self._clock, capacity=50, on_release=self._released)
        self.video_track = ClockedTrack("video", self._clock, capacity=10, on_release=self._released)
        self.mic = MicSource("mic", slack_s=settings.call_mirror_delay_s)
        self.live: LiveCall | None = None
        self.session: Session | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._channels: list[Any] = []
        self._closed = asyncio.Event()
        self._closing = False
        self.last_heard = time.monotonic()
        self.close_reason = ""
        # A/V sync: how late each track releases frames relative to their media time.
        self._skew: dict[str, float] = {"audio": 0.0, "video": 0.0}
        self.av_offset_s = 0.0
        self.video_released: list[tuple[float, float]] = []  # (media time, clock time), recent
        self.speaking = False
        self.barge_ins: list[float] = []  # seconds from the caller's onset to the avatar silenced
        self.queued: dict[str, None] = {}  # utterances queued or speaking (bounded: max_queued_utterances)
        self.last_wait: float | None = None  # expected synthesis wait of the last say, when busy
        # say -> first video frame of that utterance released (avatar_say_first_frame_seconds)
        self._said: dict[str, float] = {}  # utterance id -> clock time of its say
        self._starting: list[tuple[float, float]] = []  # (media time of its start, clock time of its say)
        self._latency_upto = float("-inf")  # mic instants counted into avatar_engine_latency_seconds
        self._bucket = TokenBucket(settings.messages_per_second, settings.message_burst, time.monotonic)
        self.perception: CallPerception | None = None  # the caller's camera perceived (call_perception)
        self.perception_feed: Callable[[dict[str, Any]], None] | None = None  # the server-wide feed

    # -- setup ------------------------------------------------------------------------------
    async def accept(self, offer_sdp: str) -> str:
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_state)
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        kinds = {t.kind for t in self.pc.getTransceivers()}
        if "audio" in kinds:
            self.pc.addTrack(self.audio_track)
        video_sender = self.pc.addTrack(self.video_track) if "video" in kinds else None
        await self._build_media()
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        if video_sender is not None and negotiated_video_codec(self.pc.localDescription.sdp) == "video/vp8":
            install_vp8(video_sender, self.metrics.encode_latency.labels(codec="vp8").observe)
        self._spawn(self._run_session(), "session")
        self._spawn(self._watchdog(), "watchdog")
        self._spawn(self._connect_deadline(), "connect-deadline")
        return self.pc.localDescription.sdp

    async def start_media(self) -> None:
        """The call's graph without a peer: its tracks are read by whoever pulls them (the
        fake-clock timeline tests, an in-process client); the caller's audio comes from a
        track given to `self.mic.attach`."""
        await self._build_media()
        self._spawn(self._run_session(), "session")

    async def _build_media(self) -> None:
        s = self.settings
        renderer = await self.engines.renderer(s.avatar, s.call_size)
        voice = await self.engines.voice(s.voice)
        motion = await self.engines.motion()
        sink = TrackSink("call", self.audio_track, self.video_track)
        self.live = live_call_graph(mic=self.mic, sink=sink, voices=self.engines.tts, default_voice=s.voice,
                                    renderer=renderer, motion=motion, sample_rate=voice.sample_rate, fps=s.fps,
                                    lookahead_ms=s.call_lookahead_ms, mirror_delay_s=s.call_mirror_delay_s,
                                    render_margin_s=s.call_render_margin_s, latency_budget_s=s.call_latency_budget_s,
                                    lead_frames=s.call_lead_frames, barge_in_min_speech_ms=s.barge_in_min_speech_ms)
        self.set_mode(self.mode)
        # Every call's frames fall due on the same 1/fps grid: the renderer batches them.
        self.session = Session(self.live.graph, clock=self._clock, paced=True, metrics=self.metrics,
                               session_id=self.id, on_event=self._on_event,
                               align_s=1 / s.fps if s.call_frame_grid else None)
        self.session.subscribe(SessionMetrics(self.metrics, self.live.graph.name))

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"call-{self.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_session(self) -> None:
        assert self.session is not None
        try:
            await self.session.run()
            reason = "ended"
        except SessionFailed as exc:
            reason = f"stage {exc.stage} failed: {exc.error}"
        except asyncio.CancelledError:
            return
        await self.close(reason)

    async def _watchdog(self) -> None:
        """Peers that vanish without DELETE: ICE consent or DTLS usually reports it; if not,
        nothing heard from the peer for peer_timeout_s ends the call. Heard: any packet on its
        transport (media, RTCP receiver reports, data channel), so a caller without microphone
        or camera, who only watches and listens, is heard too: its reports come every second."""
        timeout = self.settings.call_peer_timeout_s
        received = 0
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            try:
                now_received = await self._packets_received()
            except Exception:  # noqa: BLE001 - counts as nothing heard, never as a dead watchdog
                log.exception("call %s: reading transport stats failed", self.id)
                now_received = received
            if now_received > received:
                received = now_received
                self.last_heard = time.monotonic()
            silent_for = time.monotonic() - max(self.last_heard, self.created)
            if self.pc.connectionState in ("failed", "closed") or silent_for > timeout:
                await self.close("peer gone" if self.pc.connectionState in ("failed", "closed")
                                 else f"nothing heard from the peer for {timeout:.0f} s")
                return

    async def _connect_deadline(self) -> None:
        """An answered offer whose ICE/DTLS never completes holds a call slot and runs a
        pipeline: after `call_connect_timeout_s` it is ended (slot freed, pipeline stopped)."""
        timeout = self.settings.call_connect_timeout_s
        end = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() >= end:
                await self.close(f"not connected {timeout:g} s after the answer (ICE/DTLS did not complete)")
                return
            await asyncio.sleep(min(0.25, timeout / 8))

    async def _packets_received(self) -> int:
        """Packets that arrived on the peer's transports (aiortc's transport stats)."""
        stats = await self.pc.getStats()
        return sum(getattr(s, "packetsReceived", 0) or 0 for s in stats.values() if s.type == "transport")

    # -- peer events ------------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.mic.attach(track)
        elif self.settings.call_perception and self.perception is None:
            self.perception = CallPerception(self.id, max_fps=self.settings.call_perception_fps,
                                             publish=self._publish_perception, origin=self._media_origin,
                                             engine=self.engines.perception)
            self.mic.taps.append(self.perception.audio)
            self._spawn(self.perception.read(track), "camera")
            self._spawn(self.perception.run(), "perception")
        else:
            self._spawn(self._drain(track), "camera")  # perception off: read it so nothing queues up

    def _media_origin(self) -> float | None:
        return self.session.media_clock.origin if self.session is not None else None

    def _publish_perception(self, record: dict[str, Any]) -> None:
        self._broadcast(record)
        if self.perception_feed is not None:
            self.perception_feed({"call": self.id, **record})

    async def _drain(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    async def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.close(f"connection {self.pc.connectionState}")

    def _on_datachannel(self, channel: Any) -> None:
        if len(self._channels) >= MAX_DATA_CHANNELS:
            channel.close()
            return
        self._channels.append(channel)

        @channel.on("message")
        def _message(message: Any) -> None:
            if not self._bucket.take():
                self._send(channel, {"type": "error", "code": "rate_limited", "message": (
                    f"over {self.settings.messages_per_second:g} messages per second "
                    f"(burst {self.settings.message_burst}); dropped")})
                return
            self._spawn(self._handle_message(channel, message), "control")

    async def _handle_message(self, channel: Any, message: Any) -> None:
        from pydantic import ValidationError

        from .protocol import Control, Interrupt, Say, SetMode

        try:
            if not isinstance(message, str):
                raise ApiError(400, "bad_message", "binary messages are not accepted on the control channel")
            if len(message) > MAX_JSON_BODY_BYTES:
                raise ApiError(413, "too_large", f"a control message is at most {MAX_JSON_BODY_BYTES} bytes")
            msg = Control.model_validate({"msg": json.loads(message)}).msg
            if isinstance(msg, Say):
                uid = await self.say(msg.text, msg.voice, msg.id)
                event = {"type": "event", "kind": "queued", "utterance_id": uid}
                if self.last_wait is not None:
                    event["expected_wait_s"] = self.last_wait
                self._send(channel, event)
            elif isinstance(msg, Interrupt):
                self.interrupt("client")
            elif isinstance(msg, SetMode):
                self.set_mode(msg.mode)
        except ValidationError as exc:
            self._send(channel, {"type": "error", "code": "bad_message", "message": describe(exc, skip=1)})
        except ApiError as exc:
            self._send(channel, {"type": "error", "code": exc.code, "message": exc.message})
        except ValueError as exc:  # not JSON
            self._send(channel, {"type": "error", "code": "bad_message", "message": str(exc)[:200]})

    # -- control ----------------------------------------------------------------------------
    async def say(self, text: str, voice: str | None = None, utterance_id: str | None = None) -> str:
        """Queue `text` (refused up front, as ApiError, when it cannot be spoken or the call's
        queue is full); its utterance id."""
        if self.live is None or self._closing:
            raise ApiError(409, "not_running", "the call is not running")
        text = text.strip()
        if not text:
            raise ApiError(400, "bad_text", "text is empty")
        if not has_words(text):
            raise ApiError(400, "bad_text", "text: nothing to say (no letters or digits)")
        if len(text) > self.settings.max_text_chars:
            raise ApiError(400, "text_too_long", f"text is {len(text)} characters, over the limit of "
                                                 f"{self.settings.max_text_chars}")
        if voice is not None:
            try:
                _, voice = await self.engines.resolve_voice(voice)
            except Unavailable as exc:
                raise ApiError(400, "unknown_voice", f"voice: {exc}") from None
        # checked after the await: another say may have been queued meanwhile
        if utterance_id is not None and utterance_id in self.queued:
            raise ApiError(409, "duplicate_id", f"utterance {utterance_id!r} is still queued or speaking")
        limit = self.settings.max_queued_utterances
        if len(self.queued) >= limit:
            raise ApiError(429, "queue_full", f"{len(self.queued)} utterances are already queued (limit {limit}); "
                                              "wait for one to finish", **{"Retry-After": "1"})
        admission = await self.engines.speech_admission(voice or self.settings.voice)
        if admission.refusal is not None:
            raise ApiError(503, "busy", admission.refusal,
                           **{"Retry-After": str(max(1, round(max(admission.wait_s, admission.lag_s))))})
        if self.live is None or self._closing:
            raise ApiError(409, "not_running", "the call is not running")
        uid = utterance_id or uuid.uuid4().hex[:8]
        self.queued[uid] = None
        self._said[uid] = self._clock.now()
        if len(self._said) > 64:  # interrupted before they started: forget the oldest
            self._said.pop(next(iter(self._said)))
        self.live.text.say(uid, text, voice)
        self.last_wait = admission.notice_s
        return uid

    def interrupt(self, by: str = "client") -> None:
        if self.live is None or self.session is None:
            return
        self.live.text.clear()
        self.queued.clear()
        epoch = self.session.interrupt()
        self._drop_queued_speech()
        self._broadcast({"type": "event", "kind": "interrupted", "by": by, "epoch": epoch})

    def _drop_queued_speech(self) -> None:
        """Frames already handed to the tracks are speech of the old epoch: silence the audio
        (keeping its timeline), and let the video run on (the next frames are at rest)."""
        import numpy as np

        from .tracks import audio_frame

        q = self.audio_track._queue  # noqa: SLF001 - the track is ours
        for r in q:
            f = r.frame
            r.frame = audio_frame(np.zeros(f.samples, np.float32), f.sample_rate, f.pts)

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if self.live is not None:
            self.live.set_mirror(mode == "mirror")
        self._broadcast({"type": "event", "kind": "mode", "mode": mode})

    # -- events -----------------------------------------------------------------------------
    def _on_event(self, event: AnyEvent) -> None:
        data = dict(event.data)
        if event.kind == "vad":
            speech = data.get("kind") == "speech_start"
            if speech and self.mode == "agent" and self.speaking and self.settings.barge_in:
                self.interrupt("barge-in")
                # reaction: from the caller's speech onset (on the session timeline) to now, when
                # the avatar's pending speech is silenced
                assert self.session is not None and self.session.media_clock.origin is not None
                now = self._clock.now() - self.session.media_clock.origin
                onset = float(data.get("time", now))
                # into the session's own event stream: metrics and the data channel read it there
                self.session.report(BargeIn(onset=onset, reaction_s=now - onset))
        elif event.kind == "barge_in":
            self.barge_ins.append(float(data["reaction_s"]))
            self._broadcast({"type": "event", "kind": "barge_in", "onset": data["onset"],
                             "reaction_s": data["reaction_s"]})
        elif event.kind == "utterance_started":
            self.speaking = True
            said = self._said.pop(str(data.get("utterance_id")), None)
            if said is not None and "media_time" in data:
                self._starting.append((float(data["media_time"]), said))
        elif event.kind in ("utterance_done", "utterance_interrupted"):
            self.speaking = False
            self.queued.pop(str(data.get("utterance_id")), None)
        elif event.kind == "segment_failed":  # that sentence is skipped; the call goes on
            self._broadcast({"type": "event", "kind": "error", "code": "synthesis_failed",
                             "utterance_id": data.get("utterance_id"), "message": data.get("message", "")})
        msg = {"type": "event", "kind": event.kind, **{k: v for k, v in data.items() if k != "kind"}}
        if event.kind == "vad":
            msg["vad"] = data.get("kind")
        if event.kind in ("vad", "utterance_started", "utterance_done", "utterance_interrupted", "word", "error",
                          "interrupted"):
            self._broadcast(msg)

    def _broadcast(self, msg: dict[str, Any]) -> None:
        for ch in list(self._channels):
            self._send(ch, msg)

    @staticmethod
    def _send(channel: Any, msg: dict[str, Any]) -> None:
        if getattr(channel, "readyState", "") == "open":
            with contextlib.suppress(Exception):
                channel.send(json.dumps(msg, default=float))

    def _released(self, r: Release, now: float) -> None:
        """A/V offset: the difference between how late (after its media time) each track
        hands frames to its encoder; 0 when the browser can sync them exactly."""
        if self.session is None or self.session.media_clock.origin is None:
            return
        kind = "video" if r.frame.__class__.__name__ == "VideoFrame" else "audio"
        lateness = now - (self.session.media_clock.origin + r.media_time)
        self._skew[kind] += 0.1 * (lateness - self._skew[kind])
        self.av_offset_s = self._skew["video"] - self._skew["audio"]
        if kind == "video":
            self.video_released.append((r.media_time, now))
            if len(self.video_released) > 4000:
                del self.video_released[:2000]
            while self._starting and r.media_time + 1e-6 >= self._starting[0][0]:
                self.metrics.say_first_frame.labels("live_call").observe(now - self._starting.pop(0)[1])
            if self.mode == "mirror" and self.live is not None:
                self._observe_engine_latency(r.media_time, now)

    def _observe_engine_latency(self, media_time: float, now: float) -> None:
        """Each caller audio chunk whose instant this frame is the first to show: seconds from
        its arrival to now (the same figure as `engine_latency`, into the histogram)."""
        assert self.live is not None
        shown = media_time + 0.5 / self.settings.fps - self.live.articulate.mirror_delay_s
        fresh = []
        for t_audio, arrived in reversed(self.mic.arrivals):
            if t_audio <= self._latency_upto:
                break
            if t_audio <= shown:
                fresh.append((t_audio, arrived))
        if fresh:
            self._latency_upto = fresh[0][0]
            hist = self.metrics.engine_latency.labels("live_call")
            for t_audio, arrived in fresh:
                if shown - t_audio < 0.2:  # not a chunk the frames skipped long ago (mode switch)
                    hist.observe(now - arrived)

    def mirror_counts(self) -> dict[str, int]:
        """Frames whose lips came from the caller's voice, and of those how many had to hold the
        model's last mouth because its audio had not been heard in time (a too short delay)."""
        a = self.live.articulate if self.live is not None else None
        return {"mirrored_frames": a.mirrored_frames if a else 0, "stale_frames": a.stale_frames if a else 0}

    def mic_jitter(self, last: int = 1500) -> list[float]:
        """How late each caller audio chunk arrived relative to the earliest-arriving one
        (the mic timeline is placed by that one), seconds."""
        if self.session is None or self.session.media_clock.origin is None:
            return []
        origin = self.session.media_clock.origin
        return [arrived - origin - t for t, arrived in list(self.mic.arrivals)[-last:]]

    def engine_latency(self, last: int = 1500) -> list[float]:
        """Mirror mode: for each caller audio chunk, seconds from its arrival to the release
        of the first video frame that shows its instant (the frame's display interval mapped
        back through the mirror delay)."""
        if self.live is None or not self.video_released or not self.mic.arrivals:
            return []
        import numpy as np

        fps, delay = self.settings.fps, self.live.articulate.mirror_delay_s
        shown = np.array([t + 0.5 / fps - delay for t, _ in self.video_released])  # caller instant shown
        released = np.array([w for _, w in self.video_released])
        out = []
        for t_audio, arrived in list(self.mic.arrivals)[-last:]:
            i = int(np.searchsorted(shown, t_audio))
            if i < len(shown) and shown[i] - t_audio < 0.2:
                out.append(float(released[i] - arrived))
        return out

    # -- teardown ---------------------------------------------------------------------------
    async def close(self, reason: str = "closed") -> None:
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        log.info("call %s closing: %s", self.id, reason)
        self._broadcast({"type": "event", "kind": "ended", "reason": reason})
        await self._flush_channels(0.5)
        current = asyncio.current_task()
        for t in list(self._tasks):
            if t is not current:
                t.cancel()
        await asyncio.gather(*[t for t in self._tasks if t is not current], return_exceptions=True)
        self.audio_track.stop()
        self.video_track.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        await stop_orphan_consent_checks(ice_connections(self.pc))
        self._closed.set()
        if self._on_closed is not None:
            self._on_closed(self)

    async def _flush_channels(self, timeout: float) -> None:
        """Give the `ended` event time to leave before the association is torn down."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and any(getattr(ch, "readyState", "") == "open" and ch.bufferedAmount > 0
                                             for ch in self._channels):
            await asyncio.sleep(0.02)
        if any(getattr(ch, "readyState", "") == "open" for ch in self._channels):
            await asyncio.sleep(0.05)  # the SCTP packet carrying it is sent from another task

    async def wait_closed(self) -> None:
        await self._closed.wait()
