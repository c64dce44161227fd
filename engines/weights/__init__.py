"""Weights the project trains itself and ships, each with a manifest (sha256, training
configuration, evaluation figures). Loading checks the hash."""
from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from typing import Any

WEIGHTS_DIR = os.path.dirname(__file__)


def _default_dir() -> str:
    return os.environ.get("AVATAR_WEIGHTS_DIR") or WEIGHTS_DIR  # a retrained model, without touching the package


class WeightsError(ValueError):
    pass


def manifest_path(name: str, directory: str | None = None) -> str:
    return os.path.join(directory or _default_dir(), f"{name}.json")


def load_manifest(name: str, directory: str | None = None) -> dict[str, Any]:
    path = manifest_path(name, directory)
    if not os.path.exists(path):
        raise WeightsError(f"no weights named {name!r} in {directory or _default_dir()} (train them: avatar train motion)")
    with open(path) as f:
        return json.load(f)


def verified_weights(name: str, directory: str | None = None) -> tuple[str, dict[str, Any]]:
    """Path of the weights file and its manifest, after checking the file's sha256."""
    manifest = load_manifest(name, directory)
    path = os.path.join(directory or _default_dir(), manifest["file"])
    if not os.path.exists(path):
        raise WeightsError(f"weights file {path} is missing")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != manifest["sha256"]:
        raise WeightsError(f"weights file {path} does not match its manifest (sha256 {h.hexdigest()[:12]}... "
                           f"!= {manifest['sha256'][:12]}...): corrupted or replaced")
    return path, manifest


__all__ = ["WEIGHTS_DIR", "WeightsError", "load_manifest", "verified_weights", "resources"]
