"""Driving a function's real main.py through functions-framework, as its own tests do.

``functions_framework.create_app(target, source, signature_type).test_client()`` loads
functions/<step>/main.py exactly as the deployed function does, so a request posted
here goes through functions-framework's own CloudEvent handling (binary mode, or the
conversion of a raw Pub/Sub push body) and then through cascade.steps.adapter. The
StepContext is the in-memory one of the unit tests; the step the function calls can be
replaced by a recorder to see the message it would have handled.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient

import cascade.steps.adapter as adapter
from cascade.core.context import StepContext
from cascade.core.settings import Settings
from cascade.core.topology import FunctionSpec
from tests.unit.conftest import Clock, memory_step_context

__all__ = ["FunctionUnderTest", "golden", "load_function"]

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN = REPO_ROOT / "tests" / "data"


def golden(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((GOLDEN / name).read_text())
    return document


class FunctionUnderTest:
    def __init__(self, spec: FunctionSpec, client: FlaskClient, module: ModuleType) -> None:
        self.spec = spec
        self.client = client
        self.module = module
        self.calls: list[tuple[Any, ...]] = []

    def record(self, *args: Any, **kwargs: Any) -> None:
        """Stands in for the step: keeps what it was called with, less the context."""
        self.calls.append((*args[1:], *kwargs.values()))

    def post(self, path: str, headers: dict[str, str], body: bytes) -> int:
        return int(self.client.post(path, data=body, headers=headers).status_code)


def load_function(
    spec: FunctionSpec, monkeypatch: pytest.MonkeyPatch, now: datetime
) -> tuple[FunctionUnderTest, StepContext]:
    """functions/<step>/main.py served by functions-framework, over an in-memory context
    whose clock reads ``now``."""
    source = REPO_ROOT / spec.source / "main.py"
    saved_path = list(sys.path)
    app = functions_framework.create_app(spec.entry_point, str(source), spec.signature)
    sys.path[:] = saved_path
    module = sys.modules.pop("main")
    clock = Clock()
    clock.now = now + timedelta(seconds=1)
    ctx = memory_step_context(clock, Settings(function_name=spec.name, function_timeout_s=60))
    monkeypatch.setattr(adapter, "context", lambda: ctx)
    return FunctionUnderTest(spec, app.test_client(), module), ctx
