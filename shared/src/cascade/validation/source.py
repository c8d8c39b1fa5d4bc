"""A file to validate, wherever it lives: its name for messages, its size, how to open it.

The step opens landed objects through the storage client (streamed, never written to
a local path named after the object); tests and benchmarks open local files.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from io import BytesIO
from typing import Any, BinaryIO

import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
import requests

from cascade.core.errors import BadInputError
from cascade.core.store import is_gzip_encoding
from cascade.validation.names import FileFormat

__all__ = [
    "NETWORK_ERRORS",
    "BlockStream",
    "ByteStream",
    "DataSource",
    "line_blocks",
    "open_byte_stream",
    "prepend",
]

_MAX_LINE_BLOCKS = 16

# Failures of the transport, not of the bytes: let them through so the step retries.
NETWORK_ERRORS = (ConnectionError, TimeoutError, requests.RequestException)

ByteOpener = Callable[[], AbstractContextManager[BinaryIO]]


GZIP_MAGIC = b"\x1f\x8b"
_PEEK_BUFFER_BYTES = 64 * 1024


@dataclass(frozen=True)
class DataSource:
    """``open`` may be called more than once (a read restarts when a column widens).

    ``open`` gives the bytes as stored; ``content_encoding`` is the stored object's
    ``Content-Encoding``. ``gzip`` (``gsutil cp -Z``, ``gcloud storage cp -Z``) means
    the stored bytes are gzip of the file the name describes: Cloud Storage would
    decompress them while serving them, with no limit on what they expand to, so they
    are read as stored and decompressed here, bounded like a ``.csv.gz``.
    """

    uri: str
    file_format: FileFormat
    size: int | None
    open: ByteOpener
    content_encoding: str = ""
    record_fields: frozenset[str] | None = None
    """A stream file: the field names its records may hold (the stream's schema,
    ``cascade.core.streams.StreamFields``); a record naming another is split out.
    None: any (a file's columns are judged by the dataset's schema)."""

    @property
    def gzip_encoded(self) -> bool:
        """Stored gzip-compressed under ``Content-Encoding: gzip``."""
        return is_gzip_encoding(self.content_encoding)

    @classmethod
    def local_file(cls, path: str, file_format: FileFormat, *, uri: str = "") -> DataSource:
        """A file on this machine (benchmarks, tests, the CLI)."""
        import os

        def opener() -> AbstractContextManager[BinaryIO]:
            return open(path, "rb")

        return cls(
            uri=uri or path, file_format=file_format, size=os.path.getsize(path), open=opener
        )

    @classmethod
    def in_memory(
        cls, uri: str, file_format: FileFormat, data: bytes, *, content_encoding: str = ""
    ) -> DataSource:
        """Bytes already read (a small object, fetched whole once): every ``open``
        reads them again from memory."""
        return cls(
            uri=uri,
            file_format=file_format,
            size=len(data),
            open=lambda: BytesIO(data),
            content_encoding=content_encoding,
        )


class ByteStream:
    """Reads a source's bytes, decompressing gzip, refusing more than ``max_bytes``.

    ``gzip_encoded``: the stored bytes are gzip under ``Content-Encoding`` and are
    decompressed first. A ``.gz`` name stored that way is either compressed twice
    (``gsutil cp -Z`` of a ``.csv.gz``) or, as often, compressed once and labelled
    both ways (Cloud Storage's transcoding page warns of it): the name's gzip is
    undone only when the decoded bytes start as gzip does.
    """

    def __init__(
        self,
        raw: BinaryIO,
        *,
        gzipped: bool,
        max_bytes: int,
        uri: str,
        gzip_encoded: bool = False,
    ) -> None:
        self._uri = uri
        self._max_bytes = max_bytes
        self._total = 0
        stream: Any = raw
        if gzip_encoded:
            stream = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "gzip")
            if gzipped:
                stream = io.BufferedReader(stream, _PEEK_BUFFER_BYTES)
                gzipped = self._guarded(lambda: stream.peek(2)[:2]) == GZIP_MAGIC
        if gzipped:
            stream = pa.CompressedInputStream(pa.PythonFile(stream, mode="r"), "gzip")
        self._stream = stream

    def _guarded(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except NETWORK_ERRORS:
            raise
        except (OSError, pa.ArrowException) as error:
            raise BadInputError(f"cannot decompress the file: {error}", uri=self._uri) from error

    def readinto(self, target: memoryview) -> int:
        """Fill ``target`` with the next bytes; 0 at the end of the data."""
        count = int(self._guarded(lambda: self._stream.readinto(target)))
        self._total += count
        if self._total > self._max_bytes:
            raise BadInputError(
                f"the file holds more than {self._max_bytes} bytes once decompressed "
                "(validation.max_uncompressed_bytes)",
                uri=self._uri,
            )
        return count


@contextmanager
def open_byte_stream(source: DataSource, max_bytes: int) -> Iterator[ByteStream]:
    with source.open() as raw:
        yield ByteStream(
            raw,
            gzipped=source.file_format.gzipped,
            max_bytes=max_bytes,
            uri=source.uri,
            gzip_encoded=source.gzip_encoded,
        )


def _fill(stream: ByteStream, target: memoryview) -> int:
    """Read until ``target`` is full or the data ends; the number of bytes read."""
    filled = 0
    while filled < len(target):
        count = stream.readinto(target[filled:])
        if count == 0:
            break
        filled += count
    return filled


def line_blocks(stream: ByteStream, block_bytes: int, *, uri: str) -> Iterator[memoryview]:
    """Blocks of about ``block_bytes`` that end at a line break (the last one may not).

    Each block is a fresh buffer the bytes are read into once: no copy but the partial
    line carried over to the next block.
    """
    carried = b""
    size = block_bytes
    while True:
        buffer = bytearray(len(carried) + size)
        buffer[: len(carried)] = carried
        filled = len(carried) + _fill(stream, memoryview(buffer)[len(carried) :])
        if filled == len(carried):
            if carried:
                yield memoryview(bytes(carried))
            return
        cut = buffer.rfind(b"\n", 0, filled)
        if cut < 0:
            if filled > _MAX_LINE_BLOCKS * block_bytes:
                raise BadInputError(
                    f"a line is longer than {filled} bytes: is this a text file?", uri=uri
                )
            carried, size = bytes(buffer[:filled]), size * 2
            continue
        carried, size = bytes(buffer[cut + 1 : filled]), block_bytes
        yield memoryview(buffer)[: cut + 1]


class BlockStream:
    """A read-only file object over an iterator of byte blocks (for Arrow readers)."""

    def __init__(self, blocks: Iterator[memoryview]) -> None:
        self._blocks = blocks
        self._buffer = b""
        self.closed = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            block = next(self._blocks, None)
            if block is None:
                break
            self._buffer += bytes(block)
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def prepend(first: memoryview, rest: Iterator[memoryview]) -> Iterator[memoryview]:
    """``first`` (unless empty) followed by the blocks of ``rest``."""
    if first:
        yield first
    yield from rest
