"""The model server's settings: what Vertex AI and the deployer set, and what is refused
at startup rather than served wrongly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cascade.core.settings import Settings
from cascade.serving import __main__ as serving_main
from cascade.serving.server_settings import ModelServerSettings

VERTEX = {
    "AIP_STORAGE_URI": "gs://vertex-copy/model",
    "CASCADE_SERVING_MODEL_NAME": "credit",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean environment: none of the server's own variables set."""
    for name in (
        "AIP_STORAGE_URI",
        "CASCADE_SERVING_STORAGE_URI",
        "CASCADE_SERVING_MODEL_NAME",
        "CASCADE_SERVING_RUN_ID",
        "CASCADE_SERVING_MODE",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def settings_of(env: pytest.MonkeyPatch, variables: dict[str, str]) -> ModelServerSettings:
    for name, value in variables.items():
        env.setenv(name, value)
    return ModelServerSettings()


def test_by_default_one_model_is_dynamic_without_a_run(env: pytest.MonkeyPatch) -> None:
    settings = settings_of(env, VERTEX)

    assert (settings.storage_uri, settings.run_id, settings.mode) == (
        "gs://vertex-copy/model",
        None,
        "dynamic",
    )


@pytest.mark.parametrize("mode", ["dynamic", "static", "hybrid"])
def test_the_deployers_run_and_mode_are_read(env: pytest.MonkeyPatch, mode: str) -> None:
    settings = settings_of(
        env, {**VERTEX, "CASCADE_SERVING_RUN_ID": "credit-bbb", "CASCADE_SERVING_MODE": mode}
    )

    assert (settings.run_id, settings.mode) == ("credit-bbb", mode)


def test_a_blank_run_id_is_unset(env: pytest.MonkeyPatch) -> None:
    assert settings_of(env, {**VERTEX, "CASCADE_SERVING_RUN_ID": ""}).run_id is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {**VERTEX, "CASCADE_SERVING_RUN_ID": "r", "CASCADE_SERVING_MODE": "precomputed"},
            "CASCADE_SERVING_MODE must be one of dynamic, static, hybrid, not 'precomputed'",
        ),
        (
            {**VERTEX, "CASCADE_SERVING_MODE": "static"},
            "CASCADE_SERVING_MODE=static needs CASCADE_SERVING_RUN_ID",
        ),
        (
            {**VERTEX, "CASCADE_SERVING_MODE": "hybrid"},
            "CASCADE_SERVING_MODE=hybrid needs CASCADE_SERVING_RUN_ID",
        ),
        (
            {"CASCADE_SERVING_RUN_ID": "r"},
            "apply to the one model of AIP_STORAGE_URI, which is not set",
        ),
        (
            {"CASCADE_SERVING_MODE": "static"},
            "apply to the one model of AIP_STORAGE_URI, which is not set",
        ),
        (
            {**VERTEX, "CASCADE_SERVING_MODEL_NAME": "Credit/1", "CASCADE_SERVING_RUN_ID": "r"},
            "CASCADE_SERVING_MODEL_NAME 'Credit/1' is not a dataset name",
        ),
    ],
)
def test_settings_that_would_serve_wrongly_are_refused_naming_the_variable(
    env: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        settings_of(env, variables)


def test_the_entry_point_stops_with_the_message_on_invalid_settings(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("AIP_STORAGE_URI", "gs://vertex-copy/model")
    env.setenv("CASCADE_SERVING_MODE", "static")

    assert serving_main.main() == 2

    assert "CASCADE_SERVING_MODE=static needs CASCADE_SERVING_RUN_ID" in capsys.readouterr().err


def test_the_entry_point_gives_the_server_its_run_and_mode(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: list[dict[str, Any]] = []
    env.setattr(serving_main, "ModelServer", lambda **kwargs: made.append(kwargs))
    serving = settings_of(
        env,
        {
            **VERTEX,
            "CASCADE_SERVING_RUN_ID": "credit-bbb",
            "CASCADE_SERVING_MODE": "hybrid",
            "CASCADE_SERVING_CACHE_DIR": str(tmp_path),
        },
    )

    serving_main.build_server(Settings(), serving)

    [kwargs] = made
    assert kwargs["static_model"] == ("credit", "gs://vertex-copy/model")
    assert (kwargs["static_run_id"], kwargs["static_mode"]) == ("credit-bbb", "hybrid")
