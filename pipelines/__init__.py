"""The stages of the engine and the recipes that wire them into graphs.

Each concern has its own package (speech, motion, render, media); each keeps a pure core
(functions and small classes testable without a graph) and thin stage wrappers.
"""
