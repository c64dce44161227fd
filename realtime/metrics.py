"""Prometheus metrics of the runtime, registered in a registry the owner passes in.

No module-level metric objects: a server creates one `RuntimeMetrics` over its registry and
hands it to every session; tests create their own. Labels name the graph (recipe) and the
stage or channel, never the session, to keep cardinality bounded.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.010, 0.020, 0.040, 0.080, 0.160, 0.320, 0.640, 1.28)


class RuntimeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "avatar") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, ns = self.registry, namespace
        self.stage_latency = Histogram(
            "stage_latency_seconds", "Processing time of one input frame by a stage",
            ["graph", "stage"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.stage_queue = Histogram(
            "stage_queue_seconds", "How long a frame waited in a stage's input channel before the stage "
            "took it (its processing time is stage_latency_seconds)",
            ["graph", "stage"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.frames_in = Counter("stage_frames_in_total", "Frames a stage received",
                                 ["graph", "stage"], namespace=ns, registry=r)
        self.frames_out = Counter("stage_frames_out_total", "Frames a stage emitted",
                                  ["graph", "stage"], namespace=ns, registry=r)
        self.budget_exceeded = Counter(
            "stage_budget_exceeded_total", "Frames whose processing took longer than the stage budget",
            ["graph", "stage"], namespace=ns, registry=r)
        self.frames_dropped = Counter(
            "frames_dropped_total", "Frames dropped by a channel, by reason (late, overflow, stale_epoch)",
            ["graph", "channel", "reason"], namespace=ns, registry=r)
        self.deadline_misses = Counter(
            "deadline_misses_total", "Frames found past their deadline, by the channel policy applied",
            ["graph", "channel", "policy"], namespace=ns, registry=r)
        self.queue_depth = Gauge("channel_queue_depth", "Frames waiting in a channel",
                                 ["graph", "channel"], namespace=ns, registry=r)
        self.loop_lag = Histogram("event_loop_lag_seconds", "How late the event loop woke a timer",
                                  namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.sessions_active = Gauge("sessions_active", "Sessions running", ["graph"],
                                     namespace=ns, registry=r)
        self.encode_latency = Histogram(
            "encode_seconds", "Time to encode one outgoing frame for the network, by codec",
            ["codec"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.engine_batch = Histogram(
            "engine_batch_items", "Items per engine call (frames of all sessions rendered together)",
            ["engine"], namespace=ns, registry=r, buckets=(1, 2, 3, 4, 6, 8, 16, 32, 64))
        self.engine_queue = Histogram(
            "engine_queue_seconds", "How long a request waited in the engine's batcher before its engine "
            "call started (engines/batcher.py)", ["engine"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.engine_compute = Histogram(
            "engine_compute_seconds", "How long one engine call took (a batch of every session's items)",
            ["engine"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.engine_lateness = Histogram(
            "engine_lateness_seconds", "How long after its deadline an engine request was answered; 0 "
            "when on time", ["engine"], namespace=ns, registry=r, buckets=LATENCY_BUCKETS)
        self.engine_latency = Histogram(
            "engine_latency_seconds", "Audio in -> the video frame showing it released to the network: "
            "for a mirroring call, from a caller audio chunk's arrival", ["graph"], namespace=ns, registry=r,
            buckets=LATENCY_BUCKETS)
        self.say_first_frame = Histogram(
            "say_first_frame_seconds", "From a say request to the first video frame of that utterance "
            "released to the network", ["graph"], namespace=ns, registry=r,
            buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0))
        self.utterances = Counter(
            "utterances_total", "Utterances by outcome: started, done, interrupted (barge-in, client), "
            "failed (a sentence that could not be synthesized)", ["graph", "outcome"], namespace=ns, registry=r)
        self.barge_in_reaction = Histogram(
            "barge_in_reaction_seconds", "From the caller's speech onset to the avatar silenced (agent mode)",
            ["graph"], namespace=ns, registry=r, buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0))
        self.engine_restarts = Counter("engine_restarts_total", "Engine replicas restarted after they died "
                                       "(a renderer process killed, ...)", ["engine"], namespace=ns, registry=r)
        self.speech_lateness = Histogram(
            "speech_lateness_seconds", "How long after its deadline (when its audio was needed) a "
            "synthesis job finished; 0 when on time", ["backend"], namespace=ns, registry=r,
            buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0))
        self.speech_underruns = Counter(
            "speech_underrun_frames_total", "Frames of a streamed sentence played as silence because "
            "its next piece of audio came too late", ["graph"], namespace=ns, registry=r)
        self.speech_queue = Gauge("speech_queue_depth", "Synthesis jobs waiting, all sessions", ["backend"],
                                  namespace=ns, registry=r)
        self.session_failures = Counter("session_failures_total", "Sessions ended by a failing stage",
                                        ["graph", "stage"], namespace=ns, registry=r)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (0 when absent); handy for reports and tests."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v
