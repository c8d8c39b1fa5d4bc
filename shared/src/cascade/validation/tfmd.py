"""The tensorflow-metadata protos, imported once (the package ships no type stubs)."""

from __future__ import annotations

from tensorflow_metadata.proto.v0 import (  # type: ignore[import-untyped,unused-ignore]
    anomalies_pb2,
    schema_pb2,
    statistics_pb2,
)

__all__ = ["anomalies_pb2", "schema_pb2", "statistics_pb2"]
