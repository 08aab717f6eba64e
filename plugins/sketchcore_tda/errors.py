"""The errors of sketch stores. Each is a ``sketchcore.SketchcoreError``, so the ``sketchcore``
command reports it in one line (a traceback only with ``--debug``)."""

from __future__ import annotations

from sketchcore import SketchcoreError, StoreMismatchError

__all__ = ["StoreMismatchError", "StoreIncompleteError", "StoreDamagedError", "StoreLockedError",
           "StoreFormatError"]


class StoreIncompleteError(SketchcoreError, RuntimeError):
    """A store read before every row chunk was written (finish it by running the build again)."""


class StoreDamagedError(SketchcoreError, RuntimeError):
    """A row chunk whose bytes do not match the checksum recorded when it was written (deleted,
    truncated or altered files). It is never served; a resumed build rewrites it. ``detail``
    says what is wrong with the chunk, without the advice around it."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class StoreLockedError(SketchcoreError, RuntimeError):
    """Another live process holds the store's writer lock."""


class StoreFormatError(StoreMismatchError):
    """A folder whose metadata or array layout is not a valid sketch store of this version."""
