"""Results from worker threads to the UI thread without Python objects inside Qt signals.

Emitting a PySide6 signal with Python objects (dicts, result records) from another thread queues
them inside Qt; at interpreter exit that path was seen to release them once too often (a
``bool_dealloc`` abort after the tests had passed). Here the objects travel in a plain deque and
the signal only says "something arrived", so Qt never owns a Python reference.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

from PySide6.QtCore import QObject, Signal


class Inbox(QObject):
    """``post(handler, *args)`` from any thread; ``handler(*args)`` runs on the thread owning the inbox."""

    _arrived = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._items: deque[tuple[Callable, tuple]] = deque()
        self._lock = threading.Lock()
        self._arrived.connect(self._deliver)

    def post(self, handler: Callable, *args) -> None:
        with self._lock:
            self._items.append((handler, args))
        self._arrived.emit()

    def _deliver(self) -> None:
        while True:
            with self._lock:
                if not self._items:
                    return
                handler, args = self._items.popleft()
            handler(*args)
