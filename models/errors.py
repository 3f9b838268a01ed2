"""The error every model loader raises; its own module so the registry and the artifact kinds it dispatches to share it without an import cycle."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """A model artifact is missing, altered, or was trained on other features."""
