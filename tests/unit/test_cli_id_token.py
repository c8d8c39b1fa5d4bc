"""``cascade id-token``: the local ``gcloud auth print-identity-token --audiences=<url>``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cascade.cli.main import cli
from cascade.localcloud.id_tokens import LOCAL_OPERATOR, LocalIdTokens
from cascade.localcloud.local_settings import LocalCloudSettings


@pytest.fixture(name="local")
def local_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalCloudSettings:
    monkeypatch.setenv("CASCADE_LOCAL_STATE_DIR", str(tmp_path / "state"))
    return LocalCloudSettings().absolute()


def _run(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["id-token", *arguments])
    return result.exit_code, result.output.strip()


def test_the_token_names_the_operator_for_the_function_s_url(local: LocalCloudSettings) -> None:
    _, url = _run("train-http", "--url")
    code, token = _run("train-http")

    assert code == 0
    assert url.startswith("http://127.0.0.1:")
    assert LocalIdTokens(local.id_token_key_file).verify(token, url) == LOCAL_OPERATOR


def test_as_names_another_principal(local: LocalCloudSettings) -> None:
    _, url = _run("review-http", "--url")
    _, token = _run("review-http", "--as", "ana@example.com")

    assert LocalIdTokens(local.id_token_key_file).verify(token, url) == "ana@example.com"


def test_an_unknown_function_is_refused_listing_the_functions(local: LocalCloudSettings) -> None:
    code, output = _run("../../etc/passwd")

    assert code == 2
    assert "train-http" in output
    assert not local.id_token_key_file.exists()
