"""Adapters that put this engine inside other frameworks (Pipecat; the face core they share)."""
