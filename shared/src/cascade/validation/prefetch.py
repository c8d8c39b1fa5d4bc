"""Read ahead: produce the next batch on a worker thread while this one is summarised.

Arrow releases the GIL while parsing and computing, so reading block k+1 overlaps
with the statistics of block k. The queue bounds how many batches exist at once
(``depth`` waiting plus the one being produced and the one being consumed).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["prefetched"]

ItemT = TypeVar("ItemT")
_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _produce(source: Iterator[ItemT], slots: queue.Queue[object], stop: threading.Event) -> None:
    try:
        for item in source:
            while not stop.is_set():
                try:
                    slots.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        slots.put(_DONE)
    except BaseException as error:  # noqa: BLE001 - handed to the consumer, re-raised there
        slots.put(_Failure(error))
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def prefetched(source: Iterator[ItemT], *, depth: int = 1) -> Iterator[ItemT]:
    """The items of ``source`` in order, produced one step ahead on a worker thread.

    An exception raised by ``source`` is re-raised here, at the item it replaced. If
    the consumer stops early, the worker stops at its next item and closes ``source``.
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    worker = threading.Thread(
        target=_produce, args=(source, slots, stop), name="cascade-prefetch", daemon=True
    )
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
