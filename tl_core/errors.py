"""Errors that carry a message a non-expert can act on.

Every error raised on purpose by tl_core derives from :class:`TransferLabError`, so the CLI
and the app can show ``str(err)`` as-is instead of a traceback.
"""
from __future__ import annotations


class TransferLabError(Exception):
    """Base class: the message is written for the user, in plain language."""


class ConfigError(TransferLabError, ValueError):
    """A setting is out of range or inconsistent."""


class DataError(TransferLabError):
    """The data folder cannot be used (no classes, nothing readable, ...)."""


class ImageLoadError(TransferLabError):
    """One image could not be read; ``reason`` says why in a few words."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class WeightsError(TransferLabError):
    """Pretrained weights could not be found, downloaded or loaded."""


class RunError(TransferLabError):
    """A run folder is missing pieces or cannot be read."""


class UploadError(TransferLabError):
    """An uploaded archive or folder was refused."""


class ExportError(TransferLabError):
    """An export could not be written or did not reproduce the model's outputs."""
