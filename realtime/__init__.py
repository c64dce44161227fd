"""The runtime: clocks, typed frames, bounded channels with late-frame policies, the stage
contract, graphs and supervised sessions, metrics. Knows nothing of faces or codecs."""
from .channel import Channel, ChannelStats, LatePolicy
from .clock import Clock, FakeClock, MediaClock, MonotonicClock
from .errors import ChannelClosed, ChannelFull, GraphError, SessionFailed
from .frames import AudioFrame, Frame, SegmentEnd, VideoFrame
from .graph import Graph, Link, Session
from .looplag import LoopLagMonitor
from .metrics import RuntimeMetrics
from .observers import SessionMetrics
from .events import SessionEvent
from .stage import AnyEvent, Event, MapStage, Stage, StageContext

__all__ = [
    "AnyEvent", "AudioFrame", "Channel", "ChannelClosed", "ChannelFull", "ChannelStats", "Clock", "Event",
    "FakeClock", "Frame", "Graph", "GraphError", "LatePolicy", "Link", "LoopLagMonitor",
    "MapStage", "MediaClock", "MonotonicClock", "RuntimeMetrics", "SegmentEnd", "Session",
    "SessionEvent", "SessionFailed", "SessionMetrics", "Stage", "StageContext", "VideoFrame",
]
