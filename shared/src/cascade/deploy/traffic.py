"""Pure changes to a ``ServingState``: the traffic arithmetic both deployers share.

Each function takes the state, changes it in place and returns what it decided; the
deployers run them inside ``update_serving_state`` (so they may run more than once).
"""

from __future__ import annotations

from datetime import datetime

from cascade.core.errors import BadRequestError
from cascade.serving.state import DeployedVersion, ServingState

__all__ = [
    "add_version",
    "previous_version",
    "promote",
    "remove_version",
    "restore_previous",
    "retire_beyond",
    "start_canary",
]


def add_version(state: ServingState, entry: DeployedVersion) -> DeployedVersion:
    """Add ``entry`` (deployed with no traffic yet), or return the run's existing version."""
    for existing in state.versions:
        if existing.run_id == entry.run_id and existing.model_uri == entry.model_uri:
            return existing
    state.versions.append(entry)
    state.record(entry.deployed_at, "deploy", entry.version, f"run {entry.run_id}")
    return entry


def _scaled(traffic: dict[str, int], total: int) -> dict[str, int]:
    """``traffic`` scaled to sum to ``total`` (largest remainders; integer percents)."""
    current = sum(traffic.values())
    if not current or not total:
        return {}
    exact = {version: share * total / current for version, share in traffic.items()}
    scaled = {version: int(value) for version, value in exact.items()}
    leftover = total - sum(scaled.values())
    by_remainder = sorted(exact, key=lambda v: (exact[v] - scaled[v], exact[v]), reverse=True)
    for version in by_remainder[:leftover]:
        scaled[version] += 1
    return {version: share for version, share in scaled.items() if share > 0}


def start_canary(state: ServingState, version: str, percent: int, at: datetime) -> int:
    """Give ``version`` ``percent`` of the traffic (all of it when nothing else serves);
    returns the share it got."""
    entry = _entry(state, version)
    others = {v: share for v, share in state.traffic.items() if v != version and share > 0}
    share = 100 if not others or percent >= 100 else percent
    state.traffic = (
        {**_scaled(others, 100 - share), version: share} if share < 100 else {version: 100}
    )
    entry.state = "serving" if share == 100 else "canary"
    state.record(at, "canary", version, f"{share}% of traffic")
    return share


def promote(
    state: ServingState, version: str, at: datetime, *, actor: str = "", reason: str = ""
) -> None:
    """All traffic to ``version``; the other deployed versions stand by (for rollback).
    ``actor`` and ``reason``: who asked and why, when a person did (the console)."""
    entry = _entry(state, version)
    for other in state.deployed:
        if other.version != version:
            other.state = "standby"
    entry.state = "serving"
    state.traffic = {version: 100}
    state.record(at, "promote", version, "100% of traffic", actor=actor, reason=reason)


def remove_version(state: ServingState, version: str, at: datetime, reason: str) -> None:
    """Take ``version`` out (rolled back); its share goes back to the others."""
    entry = _entry(state, version)
    remaining = {v: share for v, share in state.traffic.items() if v != version}
    state.traffic = _scaled(remaining, 100)
    if not state.traffic:
        fallback = previous_version(state, before=version)
        if fallback is not None:
            state.traffic = {fallback.version: 100}
    for other in state.deployed:
        if other.version in state.traffic:
            other.state = "serving"
    entry.state = "rolled_back"
    state.record(at, "rollback", version, reason)


def previous_version(state: ServingState, before: str) -> DeployedVersion | None:
    """The newest deployed version older than ``before``."""
    older = [v for v in state.deployed if int(v.version) < int(before)]
    return max(older, key=lambda v: int(v.version), default=None)


def restore_previous(
    state: ServingState, at: datetime, *, actor: str = "", reason: str = ""
) -> tuple[DeployedVersion, DeployedVersion]:
    """``cascade rollback``: the version serving now is rolled back and the previous
    deployed one takes all traffic. Returns (rolled back, now serving). ``actor`` and
    ``reason`` (who asked and why) are recorded on the history's event."""
    current = state.primary
    if current is None:
        raise BadRequestError(f"{state.dataset}: no version is serving; nothing to roll back")
    previous = previous_version(state, before=current.version)
    if previous is None:
        raise BadRequestError(
            f"{state.dataset}: version {current.version} is the only deployed version; "
            "there is nothing to roll back to"
        )
    for other in state.deployed:
        if other.version not in (current.version, previous.version):
            other.state = "standby"
    previous.state = "serving"
    current.state = "rolled_back"
    state.traffic = {previous.version: 100}
    state.record(
        at,
        "rollback",
        current.version,
        f"to version {previous.version}",
        actor=actor,
        reason=reason,
    )
    return current, previous


def retire_beyond(state: ServingState, keep: int, at: datetime) -> list[DeployedVersion]:
    """Undeploy the oldest versions without traffic until at most ``keep`` are deployed."""
    idle = sorted(
        (v for v in state.deployed if state.traffic.get(v.version, 0) == 0),
        key=lambda v: int(v.version),
    )
    excess = max(0, len(state.deployed) - keep)
    retired = idle[:excess]
    for entry in retired:
        entry.state = "retired"
        state.record(at, "retire", entry.version, f"more than {keep} versions deployed")
    return retired


def _entry(state: ServingState, version: str) -> DeployedVersion:
    entry = state.version(version)
    if entry is None or not entry.deployed:
        raise BadRequestError(f"{state.dataset}: version {version} is not deployed")
    return entry
