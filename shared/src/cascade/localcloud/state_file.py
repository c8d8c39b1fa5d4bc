"""The local cloud's state file (``<state_dir>/state.json``), written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["CloudState", "ComponentState", "read_state", "write_state"]


class ComponentState(BaseModel):
    pid: int | None = None
    url: str = ""
    log: str = ""
    restarts: int = 0
    status: Literal["starting", "running", "restarting", "failed", "stopped"] = "starting"


class CloudState(BaseModel):
    supervisor_pid: int
    status: Literal["starting", "ready", "failed", "stopping"] = "starting"
    error: str = ""
    components: dict[str, ComponentState] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    code_fingerprint: str = Field("", description="Of the code the processes started with.")


def state_path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def read_state(state_dir: Path) -> CloudState | None:
    try:
        return CloudState.model_validate_json(state_path(state_dir).read_text())
    except (OSError, ValueError):
        return None


def write_state(state_dir: Path, state: CloudState) -> None:
    path = state_path(state_dir)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(state.model_dump_json(indent=2))
    temporary.replace(path)
