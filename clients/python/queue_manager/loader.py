"""Finding the `QueueManager` an import path names (``qm worker IMPORT_PATH``, `WorkerManager`)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from queue_manager.client import QueueManager

__all__ = ["ImportPathError", "load_queue_manager"]


class ImportPathError(ValueError):
    """An import path names no `QueueManager` (the module does not import, or the attribute is missing or
    of another type)."""


def load_queue_manager(path: str) -> QueueManager:
    """Imports ``package.module:attr`` and returns that `QueueManager`.

    A bare ``package.module`` means the module's ``qm`` attribute, or its only QueueManager. The current
    directory is importable, as with ``python -m``.

    Raises:
        ImportPathError: The module does not import, or the path names no QueueManager.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportPathError(f"cannot import {module_name!r}: {exc}") from None
    obj: Any
    if attr:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ImportPathError(f"{module_name!r} has no attribute {attr!r}")
    else:
        obj = getattr(module, "qm", None)
        if obj is None:
            found = [v for v in vars(module).values() if isinstance(v, QueueManager)]
            if len(found) != 1:
                raise ImportPathError(
                    f"{module_name!r} has no QueueManager named 'qm'; use {module_name}:NAME"
                )
            obj = found[0]
    if not isinstance(obj, QueueManager):
        raise ImportPathError(f"{path!r} is a {type(obj).__name__}, not a QueueManager")
    return obj
