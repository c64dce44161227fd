"""A self-hosted avatar for Pipecat: put it after any TTS service, and the agent's speech comes
out of the pipeline with a talking face in sync.

    pipeline = Pipeline([transport.input(), stt, llm, tts, AvatarVideoService(), transport.output()])

The TTS's audio frames go into this engine's face (integrations/speech_face.py): the causal
lip model and the warping renderer, in this process, shared by every pipeline in it. What
comes out, every 1/fps: an `OutputImageRawFrame` (`sync_with_audio`, so the output transport
shows it when the audio before it has been sent) and that frame's slice of the speech as a
`TTSAudioRawFrame`. Between utterances the face idles (blinks, breath, glances) and only
images come out. `InterruptionFrame` drops every bit of speech not yet out at once; the
transport drops what it had queued. `TTSStoppedFrame` is held back until the last of its
speech is out, so "bot stopped speaking" comes when it stops.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from integrations.speech_face import FaceEngines, SpeechFace, shared_engines

log = logging.getLogger(__name__)

END_GRACE_S = 1.0  # after an EndFrame, the queued speech plays out, and this much more at most


class AvatarVideoService(FrameProcessor):
    """Turns the TTS audio frames that pass through it into a talking face and that audio, in sync.

    Parameters: `portrait` (an image file with one face; None: the default avatar), `size`
    (pixels, square), `fps` (25: each image's audio is one 40 ms chunk of the output transport,
    so Pipecat's audio sync shows it exactly when its audio starts; docs/pipecat.md),
    `lookahead_ms` (how far past an instant the lip model listens: 40), `lead_frames`
    (frames made ahead of their time, for the transport's queue: 2), `device` ("cpu", "cuda"),
    `seed` (idle motion), `engines` (a `FaceEngines` to use instead of the process-wide one).
    """

    def __init__(self, *, portrait: str | Path | None = None, size: int = 256, fps: int = 25,
                 lookahead_ms: int = 40, lead_frames: int = 2, device: str = "cpu", seed: int = 0,
                 engines: FaceEngines | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if portrait is not None and not Path(portrait).is_file():
            raise ValueError(f"portrait {str(portrait)!r} is not a file")
        self._portrait, self._size, self._device = portrait, size, device
        self._engines = engines
        self._face_args = {"fps": fps, "lookahead_ms": lookahead_ms, "lead_frames": lead_frames, "seed": seed}
        FaceEngines(size=size)  # checks the size now (loads nothing)
        SpeechFace.check(**self._face_args)
        self.face: SpeechFace | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._context_id: str | None = None
        self._bad_audio: set[str] = set()  # problems reported once each
        self._markers_held = 0  # TTSStoppedFrames taken in and not yet pushed on

    @property
    def engines(self) -> FaceEngines | None:
        return self._engines

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, StartFrame):
            await self._start()
            await self.push_frame(frame, direction)
            self._start_loop()
        elif isinstance(frame, TTSAudioRawFrame):
            self._take_audio(frame)  # it comes out again with its frames
        elif isinstance(frame, TTSStoppedFrame) and self.face is not None:
            self._markers_held += 1
            self.face.end_of_speech(marker=frame)  # pushed when its speech is out
        elif isinstance(frame, InterruptionFrame):
            if self.face is not None:
                dropped = self.face.interrupt()
                self._markers_held = self.face.markers_pending()  # the dropped speech's go with it
                log.debug("interrupted: %.2f s of speech dropped", dropped)
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._finish(graceful=True)
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._finish(graceful=False)
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._finish(graceful=False)

    async def _start(self) -> None:
        if self._engines is None:
            self._engines = shared_engines(self._portrait, self._size, self._device)
        await self._engines.start()  # seconds for the first pipeline of the process, then nothing
        self.face = SpeechFace(self._engines, **self._face_args)

    def _start_loop(self) -> None:
        if self._loop_task is None:
            self._loop_task = self.create_task(self._frame_loop(), "avatar-frames")

    def _take_audio(self, frame: TTSAudioRawFrame) -> None:
        if self.face is None:
            return  # before StartFrame (or after the end): nothing to show it on
        self._context_id = frame.context_id
        try:
            self.face.push_audio(frame.audio, frame.sample_rate, frame.num_channels)
        except ValueError as exc:  # this chunk only: the face and the pipeline carry on
            problem = str(exc)
            if problem not in self._bad_audio:
                self._bad_audio.add(problem)
                log.warning("avatar: audio frame dropped: %s", problem)
                self.create_task(self.push_error(f"avatar: audio frame dropped: {problem}"), "avatar-error")

    async def _frame_loop(self) -> None:
        assert self.face is not None
        size = (self._size, self._size)
        try:
            async for f in self.face.frames():
                image = OutputImageRawFrame(image=f.image.tobytes(), size=size, format="RGB")
                image.sync_with_audio = True  # shown when the audio before it has been sent
                await self.push_frame(image)
                if f.audio is not None:
                    await self.push_frame(TTSAudioRawFrame(audio=f.audio.tobytes(), sample_rate=f.sample_rate,
                                                           num_channels=1, context_id=self._context_id))
                for marker in f.done:
                    await self.push_frame(marker)
                    self._markers_held -= 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the renderer or lip model failed for good: say so, once
            log.exception("avatar frames stopped")
            await self.push_error(f"avatar: frames stopped: {exc}", exception=exc)

    async def _finish(self, *, graceful: bool) -> None:
        task, self._loop_task = self._loop_task, None
        if task is None:
            return
        if graceful and self.face is not None:
            # what was said plays out first (the transport waits for it too)
            deadline = asyncio.get_running_loop().time() + self.face.queued_s() + END_GRACE_S
            # ... and the frame that ends it goes out with its TTSStoppedFrame: the last audio
            # leaves the queue a frame before that frame and its markers are pushed
            while ((self.face.queued_s() > 0 or self._markers_held > 0)
                   and asyncio.get_running_loop().time() < deadline and not task.done()):
                await asyncio.sleep(1 / self.face.fps)
        with contextlib.suppress(asyncio.CancelledError):
            await self.cancel_task(task)
