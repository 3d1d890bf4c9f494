"""Session stores behind one contract (DESIGN §6), chosen by URL."""

from __future__ import annotations

from .base import (
    DEFAULT_TOUCH_FRACTION,
    AlreadyExists,
    NotFound,
    Store,
    StoreError,
    VersionConflict,
)

__all__ = [
    "DEFAULT_TOUCH_FRACTION",
    "AlreadyExists",
    "NotFound",
    "Store",
    "StoreError",
    "VersionConflict",
]
