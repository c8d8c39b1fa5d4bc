"""Traffic arithmetic on serving.json: canary, promote, roll back, retire."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cascade.core.errors import BadRequestError
from cascade.deploy import traffic
from cascade.serving.state import DeployedVersion, ServingState

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def state_with(*versions: str, split: dict[str, int] | None = None) -> ServingState:
    state = ServingState(dataset="credit", target="local", endpoint="credit", updated_at=NOW)
    for version in versions:
        traffic.add_version(
            state,
            DeployedVersion(
                version=version,
                run_id=f"run-{version}",
                model_uri=f"gs://b/{version}",
                state="standby",
                deployed_at=NOW,
            ),
        )
    state.traffic = split or {}
    return ServingState.model_validate(state.model_dump())


def test_the_first_version_takes_all_traffic_at_once() -> None:
    state = state_with("1")

    share = traffic.start_canary(state, "1", 10, NOW)

    assert share == 100
    assert state.traffic == {"1": 100}
    assert state.primary is not None
    assert state.primary.version == "1"


def test_a_canary_takes_its_share_from_the_others_proportionally() -> None:
    state = state_with("1", "2", "3", split={"1": 75, "2": 25})

    share = traffic.start_canary(state, "3", 10, NOW)

    assert share == 10
    assert state.traffic == {"1": 68, "2": 22, "3": 10}  # 67.5 and 22.5: largest remainder
    assert sum(state.traffic.values()) == 100
    assert state.version("3").state == "canary"  # type: ignore[union-attr]


def test_promote_then_restore_previous() -> None:
    state = state_with("1", "2", split={"1": 90, "2": 10})

    traffic.promote(state, "2", NOW)
    assert state.traffic == {"2": 100}
    assert state.version("1").state == "standby"  # type: ignore[union-attr]

    rolled_back, serving = traffic.restore_previous(state, NOW)
    assert (rolled_back.version, serving.version) == ("2", "1")
    assert state.traffic == {"1": 100}
    assert [event.action for event in state.history][-2:] == ["promote", "rollback"]


def test_removing_a_failed_canary_gives_its_share_back() -> None:
    state = state_with("1", "2", split={"1": 90, "2": 10})

    traffic.remove_version(state, "2", NOW, "canary failed")

    assert state.traffic == {"1": 100}
    assert state.version("2").state == "rolled_back"  # type: ignore[union-attr]
    assert not state.version("2").deployed  # type: ignore[union-attr]


def test_removing_the_only_version_leaves_nothing_serving() -> None:
    state = state_with("1", split={"1": 100})

    traffic.remove_version(state, "1", NOW, "canary failed")

    assert state.traffic == {}
    assert state.primary is None


def test_retire_keeps_the_newest_versions_and_never_one_with_traffic() -> None:
    state = state_with("1", "2", "3", "4", split={"2": 100})

    retired = traffic.retire_beyond(state, 2, NOW)

    assert [entry.version for entry in retired] == ["1", "3"]
    assert [entry.version for entry in state.deployed] == ["2", "4"]


def test_nothing_to_roll_back_to_is_a_clear_error() -> None:
    with pytest.raises(BadRequestError, match="only deployed version"):
        traffic.restore_previous(state_with("1", split={"1": 100}), NOW)
    with pytest.raises(BadRequestError, match="no version is serving"):
        traffic.restore_previous(state_with("1"), NOW)


def test_registering_the_same_run_twice_reuses_its_version() -> None:
    state = state_with("1")

    again = traffic.add_version(
        state,
        DeployedVersion(
            version="2", run_id="run-1", model_uri="gs://b/1", state="standby", deployed_at=NOW
        ),
    )

    assert again.version == "1"
    assert len(state.versions) == 1


def test_serving_json_refuses_a_split_that_does_not_sum_to_100() -> None:
    with pytest.raises(ValueError, match="sum to 100"):
        state_with("1", "2", split={"1": 50, "2": 40})
