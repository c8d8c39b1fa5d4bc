"""The Cloud Bigtable emulator as a local-cloud process, and the table it needs.

``gcloud beta emulators bigtable start --host-port=127.0.0.1:<port>`` runs the SDK's
``platform/bigtable-emulator/cbtemulator`` (a child process: the supervisor stops the
whole process group). It serves the data and table-admin gRPC APIs on one loopback port;
the real ``google-cloud-bigtable`` client reaches it through ``BIGTABLE_EMULATOR_HOST``.
Every instance exists in the emulator; tables are created by ``provision_bigtable``.

The emulator keeps its data in memory only: at start and after a restart the supervisor
provisions the table again and reloads the precomputed answers from their BigQuery tables
(``cascade.batch.reload``); until that reload ends, a static dataset answers 404 and a
hybrid one asks the model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cascade.localcloud.local_settings import LOCAL_BIGTABLE_INSTANCE, LOOPBACK, LocalCloudSettings
from cascade.localcloud.processes import ProcessSpec, port_accepts
from cascade.serving.precomputed import ensure_table

__all__ = [
    "BIGTABLE_EMULATOR_ENV",
    "DEFAULT_BIGTABLE_PORT",
    "LOCAL_BIGTABLE_INSTANCE",
    "LOCAL_BIGTABLE_TABLE",
    "bigtable_emulator_problem",
    "bigtable_host",
    "bigtable_spec",
    "provision_bigtable",
]

BIGTABLE_EMULATOR_ENV = "BIGTABLE_EMULATOR_HOST"
DEFAULT_BIGTABLE_PORT = 8086
LOCAL_BIGTABLE_TABLE = "precomputed"
_HINT = (
    "The Bigtable emulator needs the Google Cloud CLI with its emulator component: "
    "`apt-get install google-cloud-cli-bigtable-emulator` (or `gcloud components install "
    "beta bigtable`)."
)


def _port(local: LocalCloudSettings, port: int | None) -> int:
    chosen = port if port is not None else getattr(local, "bigtable_port", DEFAULT_BIGTABLE_PORT)
    if not isinstance(chosen, int) or not 0 < chosen < 65536:
        raise ValueError(f"bigtable port must be 1..65535, not {chosen!r}")
    return chosen


def bigtable_host(local: LocalCloudSettings, port: int | None = None) -> str:
    """``127.0.0.1:<port>``: the value of ``BIGTABLE_EMULATOR_HOST`` for every client."""
    return f"{LOOPBACK}:{_port(local, port)}"


def bigtable_emulator_problem(gcloud: str | None = None) -> str | None:
    """Why the emulator cannot start here (with how to fix it), or None."""
    found = gcloud or shutil.which("gcloud")
    if found is None:
        return f"gcloud not found on PATH. {_HINT}"
    sdk_root = Path(found).resolve().parent.parent
    if not (sdk_root / "platform" / "bigtable-emulator" / "cbtemulator").is_file():
        return f"no bigtable-emulator component under {sdk_root}. {_HINT}"
    return None


def bigtable_spec(
    local: LocalCloudSettings, env: dict[str, str], *, port: int | None = None
) -> ProcessSpec:
    """The emulator on loopback (``port``, default ``local.bigtable_port`` or 8086)."""
    gcloud = shutil.which("gcloud") or "gcloud"
    host = bigtable_host(local, port)
    return ProcessSpec(
        name="bigtable-emulator",
        argv=[gcloud, "beta", "emulators", "bigtable", "start", "--quiet", f"--host-port={host}"],
        env=env,
        log_path=local.state_dir / "logs" / "bigtable-emulator.log",
        ready=lambda: port_accepts(LOOPBACK, _port(local, port)),
    )


def provision_bigtable(
    local: LocalCloudSettings,
    *,
    port: int | None = None,
    instance: str = LOCAL_BIGTABLE_INSTANCE,
    table: str = LOCAL_BIGTABLE_TABLE,
) -> bool:
    """Create the precomputed-answers table (idempotent: again after every restart)."""
    return ensure_table(local.project, instance, table, emulator_host=bigtable_host(local, port))
