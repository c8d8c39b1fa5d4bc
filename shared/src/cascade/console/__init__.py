"""The web console: runs (live), a run's timeline and report, and audited actions.

``create_app(ConsoleConfig(...))`` is an ASGI application over the artifacts bucket
(the same run records and index the steps write; no second source of truth).
``cascade console`` serves it on 127.0.0.1. It imports nothing of the local cloud:
the same application is meant to run on Cloud Run. See docs/console.md.
"""

from cascade.console.actions import Caller, RetrainRequested, RoleRequiredError, request_retrain
from cascade.console.app import ConsoleConfig, create_app
from cascade.console.roles import Role

__all__ = [
    "Caller",
    "ConsoleConfig",
    "RetrainRequested",
    "Role",
    "RoleRequiredError",
    "create_app",
    "request_retrain",
]
