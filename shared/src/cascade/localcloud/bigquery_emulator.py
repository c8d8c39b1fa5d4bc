"""The local BigQuery: ``bqemulator`` (DuckDB behind BigQuery's REST API) as a process.

It runs from its own venv (``.venv-bq``, ``requirements-bqemulator.txt``: it needs a
protobuf the project's pins exclude), binds loopback only, and keeps its tables in
``<state>/bigquery/data`` (``--persistent``): a restart loses nothing. At start DuckDB's
``INSTALL spatial`` looks for the extension under ``$HOME/.duckdb``; the process's HOME
is ``<state>/bigquery/home`` with the extension copied there from the
``duckdb-extension-spatial`` package, so nothing is downloaded. ``EXPORT DATA`` writes
its ``gs://`` destinations into ``<state>/bigquery/gcs`` (``BQEMU_GCS_LOCAL_ROOT``), from
where the extract function's bridge uploads them (``cascade.core.export_landing``).

Clients reach it with the real ``google-cloud-bigquery`` client
(``cascade.core.clients.make_bigquery_client``, ``BIGQUERY_EMULATOR_HOST``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import requests

from cascade.core.export_landing import local_export_root
from cascade.localcloud.local_settings import LOOPBACK, LocalCloudSettings
from cascade.localcloud.processes import ProcessSpec

__all__ = ["BQ_VENV", "MissingBigQueryEmulatorError", "bigquery_spec", "emulator_binary"]

BQ_VENV = ".venv-bq"
_PLATFORM = "linux_amd64"


class MissingBigQueryEmulatorError(RuntimeError):
    """``.venv-bq`` is not installed; the message says how to install it."""


def emulator_binary(repo_root: Path) -> Path:
    binary = repo_root / BQ_VENV / "bin" / "bqemulator"
    if not binary.is_file():
        raise MissingBigQueryEmulatorError(
            f"the local BigQuery is not installed ({binary} missing): run `make setup` "
            f"(python3.11 -m venv {BQ_VENV} && {BQ_VENV}/bin/pip install -r "
            "requirements-bqemulator.txt)"
        )
    return binary


def _spatial_extension(venv: Path) -> Path:
    found = sorted(
        venv.glob(
            "lib/python3*/site-packages/duckdb_extension_spatial/extensions/v*/*.duckdb_extension"
        )
    )
    if not found:
        raise MissingBigQueryEmulatorError(
            f"DuckDB's spatial extension is missing from {venv}: reinstall "
            "requirements-bqemulator.txt (duckdb-extension-spatial)"
        )
    return found[-1]


def prepare_home(repo_root: Path, home: Path) -> Path:
    """``home`` with DuckDB's spatial extension where ``INSTALL spatial`` finds it."""
    extension = _spatial_extension(repo_root / BQ_VENV)
    version = extension.parent.name  # v1.5.5: DuckDB's own version directory
    target = home / ".duckdb" / "extensions" / version / _PLATFORM / extension.name
    if not target.is_file() or target.stat().st_size != extension.stat().st_size:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        shutil.copyfile(extension, partial)
        os.replace(partial, target)
    return home


def _ready(url: str, project: str) -> bool:
    try:
        return requests.get(f"{url}/bigquery/v2/projects/{project}/datasets", timeout=1).ok
    except requests.RequestException:
        return False


def bigquery_spec(local: LocalCloudSettings, env: dict[str, str]) -> ProcessSpec:
    """bqemulator on ``local.bigquery_port`` (REST) and ``bigquery_grpc_port`` (the
    Storage Read/Write APIs), tables kept under ``<state>/bigquery/data``."""
    binary = emulator_binary(local.repo_root)
    root = local.state_dir / "bigquery"
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    home = prepare_home(local.repo_root, root / "home")
    url = local.bigquery_url
    assert url is not None, "bigquery_port is chosen before the spec is built"
    return ProcessSpec(
        name="bigquery-emulator",
        argv=[
            str(binary),
            "start",
            "--rest-host",
            LOOPBACK,
            "--rest-port",
            str(local.bigquery_port),
            "--grpc-host",
            LOOPBACK,
            "--grpc-port",
            str(local.bigquery_grpc_port),
            "--persistent",
            "--data-dir",
            str(data),
            "--project",
            local.project,
            "--no-admin",
            "--log-format",
            "console",
            "--log-level",
            "warning",
        ],
        env={
            **env,
            "HOME": str(home),
            "TMPDIR": str(_tmp(root)),
            # EXPORT DATA writes gs://<bucket>/<path> under this folder (bqemulator cannot
            # reach the GCS emulator); the extract function's bridge uploads it there.
            "BQEMU_GCS_LOCAL_ROOT": str(_exports(local.state_dir)),
        },
        log_path=local.state_dir / "logs" / "bigquery-emulator.log",
        ready=lambda: _ready(url, local.project),
        cwd=root,
    )


def _exports(state_dir: Path) -> Path:
    path = local_export_root(state_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tmp(root: Path) -> Path:
    """Its uploads' scratch folder (load jobs), inside the state folder."""
    path = root / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path
