"""Observers: listeners outside the stages that turn a session's events into something else.

`SessionMetrics` makes Prometheus figures of them; a call's data channel, a stream's websocket
and the dashboard feed subscribe to the same events (`Session.subscribe`). Observers match on
`kind` — the runtime knows no pipeline's types — and must be quick: they run on the loop,
inside the emitting stage's turn.
"""
from __future__ import annotations

from .metrics import RuntimeMetrics
from .stage import AnyEvent

_OUTCOMES = {"utterance_started": "started", "utterance_done": "done", "utterance_interrupted": "interrupted",
             "segment_failed": "failed"}


class SessionMetrics:
    """avatar_utterances_total{graph,outcome} and avatar_barge_in_reaction_seconds{graph}."""

    def __init__(self, metrics: RuntimeMetrics, graph: str) -> None:
        self._utterances = {o: metrics.utterances.labels(graph, o) for o in _OUTCOMES.values()}
        self._barge_in = metrics.barge_in_reaction.labels(graph)

    def __call__(self, event: AnyEvent) -> None:
        outcome = _OUTCOMES.get(event.kind)
        if outcome is not None:
            self._utterances[outcome].inc()
        elif event.kind == "barge_in":
            self._barge_in.observe(float(event.data["reaction_s"]))
