"""The model server's state: every deployed version of every dataset, loaded and routed.

A ``ModelServer`` follows ``models/<dataset>/serving.json`` in the artifacts bucket
(polled every ``poll_interval_s``, and at once when a request names a model or version
it does not have yet). For each dataset it builds a ``ModelTable`` — the loaded
``Servable`` of every deployed version and the traffic split — and swaps it in with one
reference assignment, so:

- a new version is downloaded, loaded and warmed up *before* the table that routes to
  it replaces the old one (no request ever waits on, or fails for, a half-loaded model);
- a request uses the table it looked up from start to finish: an old version stays
  alive (Python keeps it referenced) until its in-flight requests finish, then is freed;
- a version that fails to load is reported in the status API and takes no traffic; the
  versions that did load keep serving;
- a deployer's change reaches every worker at once: ``POST /v1/models/<name>:reload``
  touches a file in the shared cache folder, and each worker's next request (an
  ``os.stat``) applies the new traffic split to what it has loaded, while its background
  thread loads any new version.

One ModelServer lives in each gunicorn worker, started after the fork (``start``).

With ``static_model`` (Vertex AI's custom-container mode: ``AIP_STORAGE_URI``) the server
loads that one model under ``static_model``'s name with all the traffic, and is healthy
once it has loaded. Its version: without ``static_run_id``, 1 (dynamic only). With it,
the version ``models/<name>/serving.json`` lists for that run (Vertex AI never tells a
container its model version id; the deployer lists the version there before it deploys),
read every ``STATIC_RETRY_S`` until found: the server is not healthy before, and never
answers under a guessed version, so a static or hybrid model (``static_mode``) looks up
only the answers stored under its own version.

Serving modes (``serving.json``'s ``mode``): a static or hybrid dataset's answers come
from the precomputed store (``precomputed``: a factory, called once in the worker, like
the other clients); the request path is in ``cascade.serving.app``. Without a store, such
a dataset is answered 503 (and logged when its table is built), never silently served by
the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascade.core.paths import DatasetPaths
from cascade.core.serving_config import ServingMode
from cascade.core.store import ArtifactStore
from cascade.serving.state import DeployedVersion, ServingState
from cascade.serving.uris import UriReader

if TYPE_CHECKING:
    from cascade.serving.precomputed import PrecomputedStore
    from cascade.serving.request_log import RequestLog
    from cascade.serving.servable import Servable

__all__ = ["ModelServer", "ModelTable", "ServableLoader"]

_log = logging.getLogger("cascade.serving.server")
SERVING_SUFFIX = "/serving.json"
MODELS_PREFIX = "models/"
STATIC_RETRY_S = 10.0

ServableLoader = Callable[[Path, str, str, str], "Servable"]
"""(local_dir, version, run_id, model_uri) → a loaded, warmed-up Servable."""


def _default_loader(local_dir: Path, version: str, run_id: str, model_uri: str) -> Servable:
    from cascade.serving.servable import load_servable  # TensorFlow loads after the fork

    return load_servable(local_dir, version=version, run_id=run_id, model_uri=model_uri)


@dataclass(frozen=True)
class ModelTable:
    """One dataset's loaded versions and traffic split; replaced whole, never mutated."""

    dataset: str
    generation: int
    state: ServingState
    versions: dict[str, Servable]
    routes: tuple[tuple[float, str], ...]
    failures: dict[str, str] = field(default_factory=dict)
    complete: bool = True
    """False when built without loading: some deployed versions are still to be loaded."""

    def choose(self) -> Servable | None:
        """A version by the traffic split (each request drawn independently)."""
        if not self.routes:
            return None
        draw = random.random() * self.routes[-1][0]  # noqa: S311 - routing, not security
        for bound, version in self.routes:
            if draw < bound:
                return self.versions[version]
        return self.versions[self.routes[-1][1]]

    def latest(self) -> Servable | None:
        """The newest loaded version (TF Serving's default for an unversioned request)."""
        return self.versions[max(self.versions, key=int)] if self.versions else None


def _routes(state: ServingState, loaded: dict[str, Servable]) -> tuple[tuple[float, str], ...]:
    """Cumulative shares over the loaded versions that take traffic."""
    routes, total = [], 0.0
    for version, share in sorted(state.traffic.items(), key=lambda item: int(item[0])):
        if share > 0 and version in loaded:
            total += share
            routes.append((total, version))
    return tuple(routes)


class ModelServer:
    def __init__(
        self,
        *,
        artifacts: Callable[[], ArtifactStore],
        storage: Callable[[], UriReader],
        cache_dir: Path,
        poll_interval_s: float = 5.0,
        loader: ServableLoader = _default_loader,
        static_model: tuple[str, str] | None = None,
        static_run_id: str | None = None,
        static_mode: ServingMode = "dynamic",
        precomputed: Callable[[], PrecomputedStore] | None = None,
        request_log: Callable[[], RequestLog] | None = None,
    ) -> None:
        """``static_model``: (name, model URI) to serve alone instead of serving.json;
        ``static_run_id``: that model's run, whose version is read from serving.json
        (None: version 1); ``static_mode``: how that model answers; ``precomputed``:
        makes the store of precomputed answers (static and hybrid serving); None: this
        server answers dynamic datasets only."""
        static_run_id = static_run_id or None
        if static_mode != "dynamic" and static_run_id is None:
            raise ValueError(f"static_mode {static_mode} needs static_run_id (its version)")
        self._make_artifacts = artifacts
        self._make_storage = storage
        self._artifacts: ArtifactStore | None = None
        self._storage: UriReader | None = None
        self.cache_dir = cache_dir
        self.poll_interval_s = poll_interval_s
        self._loader = loader
        self._tables: dict[str, ModelTable] = {}
        self._sync_lock = threading.Lock()
        self._last_sync = 0.0
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._change_file = cache_dir / ".serving-changed"
        self._seen_change_ns = -1
        self.ready = threading.Event()
        self.static_model = static_model
        self._static_run_id = static_run_id
        self._static_mode: ServingMode = static_mode
        self._static_version: str | None = None if static_run_id else "1"
        self._static_attempt = -math.inf
        self._make_precomputed = precomputed
        self._precomputed: PrecomputedStore | None = None
        self._precomputed_lock = threading.Lock()
        self._make_request_log = request_log
        self._request_log: RequestLog | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Sync once, then follow serving.json in a background thread (call after fork)."""
        self.sync()
        self.ready.set()
        threading.Thread(target=self._poll, name="serving-json-poller", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        with self._precomputed_lock:
            store, self._precomputed = self._precomputed, None
            log, self._request_log = self._request_log, None
        if store is not None:
            store.close()
        if log is not None:
            log.close()

    def log_request(
        self,
        dataset: str,
        version: str,
        keys: list[Any],
        precomputed: list[bool],
        key_field: str | None = None,
    ) -> None:
        """Log one answered request (its keys, the version, which answers were
        precomputed) where a request log is configured; never raises."""
        if self._make_request_log is None or self._stopping.is_set():
            return
        try:
            if self._request_log is None:
                with self._precomputed_lock:
                    if self._request_log is None:
                        self._request_log = self._make_request_log()
            self._request_log.record(
                endpoint=dataset,
                deployed_model_id=version,
                request_id=uuid.uuid4().int >> 76,
                keys=keys,
                precomputed=precomputed,
                key_field=key_field,
            )
        except Exception:  # noqa: BLE001 - a log never fails a prediction
            _log.exception("request log unavailable")

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - keep serving what is loaded; retry next tick
                _log.exception("syncing serving.json failed; still serving the loaded versions")

    # -- lookups (request path) ---------------------------------------------------------

    def table(
        self, dataset: str, version: str | None = None, *, refresh: bool = False
    ) -> ModelTable | None:
        """The dataset's table; syncs first when it (or ``version``) is not loaded yet, or
        when ``refresh`` (this worker's view may lag the deployer's last change)."""
        if self._changed():  # a deployer changed serving.json: apply it to what is loaded
            self.sync(load=False)
            self._wake.set()  # and load what is new in the background
        table = self._tables.get(dataset)
        if refresh or table is None or (version is not None and version not in table.versions):
            # a table still missing versions is completed now (this request waits for the
            # load rather than fail); otherwise at most one sync per 50 ms
            self.sync(min_age_s=0.05 if table is None or table.complete else 0.0)
            table = self._tables.get(dataset)
        return table

    def notify_changed(self) -> None:
        """Tell every worker (they share the cache folder) that serving.json changed."""
        self._change_file.parent.mkdir(parents=True, exist_ok=True)
        self._change_file.write_text(str(time.time_ns()))

    def _changed(self) -> bool:
        try:
            return os.stat(self._change_file).st_mtime_ns != self._seen_change_ns
        except FileNotFoundError:
            return False

    @property
    def has_precomputed(self) -> bool:
        """Whether this server was given a precomputed store (static and hybrid serving)."""
        return self._make_precomputed is not None

    def precomputed_store(self) -> PrecomputedStore | None:
        """The precomputed store (made on first use, in the worker), or None without one."""
        if self._precomputed is None and self._make_precomputed is not None:
            with self._precomputed_lock:
                if self._precomputed is None and not self._stopping.is_set():
                    self._precomputed = self._make_precomputed()
        return self._precomputed

    @property
    def datasets(self) -> list[str]:
        return sorted(self._tables)

    def healthy(self) -> bool:
        """Started, and (serving one model) that model loaded."""
        if not self.ready.is_set():
            return False
        if self.static_model is None:
            return True
        table = self._tables.get(self.static_model[0])
        return table is not None and bool(table.versions)

    # -- syncing --------------------------------------------------------------------------

    def sync(self, min_age_s: float = 0.0, *, load: bool = True) -> None:
        """Bring every dataset's table in line with its serving.json; ``load=False`` applies
        traffic and removals at once and leaves versions not loaded yet to a later sync."""
        with self._sync_lock:
            if min_age_s and time.monotonic() - self._last_sync < min_age_s:
                return
            with contextlib.suppress(FileNotFoundError):
                self._seen_change_ns = os.stat(self._change_file).st_mtime_ns
            if self.static_model is not None:
                self._sync_static(*self.static_model, load=load)
                self._last_sync = time.monotonic()
                return
            artifacts = self._artifacts_store()
            seen = set()
            for name in artifacts.list_names(MODELS_PREFIX):
                if not name.endswith(SERVING_SUFFIX):
                    continue
                dataset = name[len(MODELS_PREFIX) : -len(SERVING_SUFFIX)]
                seen.add(dataset)
                found = artifacts.read_model(name, ServingState)
                current = self._tables.get(dataset)
                stale = current is None or current.generation != found[1] if found else False
                if found is not None and (stale or (load and current and not current.complete)):
                    self._tables[dataset] = self._build(dataset, *found, current, load=load)
            for dataset in set(self._tables) - seen:
                _log.info("%s: serving.json removed; unloading", dataset)
                del self._tables[dataset]
            self._last_sync = time.monotonic()

    def _sync_static(self, name: str, model_uri: str, *, load: bool) -> None:
        """Resolve the one model's version, then load it (each again after a failure, at
        most every ``STATIC_RETRY_S``); no table, so not healthy, until both are done."""
        current = self._tables.get(name)
        if not load or (current is not None and current.versions):
            return
        if time.monotonic() - self._static_attempt < STATIC_RETRY_S:
            return
        self._static_attempt = time.monotonic()
        version = self._resolve_static_version(name)
        if version is None:
            return
        now = datetime.now(UTC)
        deployed = DeployedVersion(
            version=version,
            run_id=self._static_run_id or "",
            model_uri=model_uri,
            state="serving",
            deployed_at=now,
        )
        state = ServingState(
            dataset=name,
            target="vertex",
            endpoint=name,
            versions=[deployed],
            traffic={version: 100},
            updated_at=now,
            mode=self._static_mode,
        )
        self._tables[name] = self._build(name, state, 1, None, load=True)

    def _resolve_static_version(self, name: str) -> str | None:
        """The one model's version: "1" without a run id, else the version serving.json
        lists for the run (kept once found: a run's version never changes); None while
        it cannot be read or does not list the run yet (logged; retried)."""
        if self._static_version is not None:
            return self._static_version
        where = DatasetPaths(name).serving
        try:
            found = self._artifacts_store().read_model(where, ServingState)
        except Exception:  # noqa: BLE001 - unreadable now (permissions, network): retry
            _log.exception(
                "%s: reading %s failed (the endpoint's service account needs read access to "
                "it); not serving until this model's version is known",
                name,
                where,
            )
            return None
        listed = [] if found is None else found[0].versions
        mine = [entry for entry in listed if entry.run_id == self._static_run_id]
        if not mine:
            _log.warning(
                "%s: %s lists no version of run %s yet; not serving until it does",
                name,
                where,
                self._static_run_id,
            )
            return None
        self._static_version = max(mine, key=lambda entry: int(entry.version)).version
        _log.info(
            "%s: run %s is version %s (%s)",
            name,
            self._static_run_id,
            self._static_version,
            self._static_mode,
        )
        return self._static_version

    def _build(
        self,
        dataset: str,
        state: ServingState,
        generation: int,
        current: ModelTable | None,
        *,
        load: bool,
    ) -> ModelTable:
        loaded: dict[str, Servable] = {}
        failures: dict[str, str] = {}
        complete = True
        for deployed in state.deployed:
            previous = None if current is None else current.versions.get(deployed.version)
            if previous is not None and previous.model_uri == deployed.model_uri:
                loaded[deployed.version] = previous
                continue
            if current is not None and deployed.version in current.failures:
                failures[deployed.version] = current.failures[deployed.version]
                continue
            if not load:
                complete = False
                continue
            try:
                loaded[deployed.version] = self._load(
                    dataset, deployed.version, deployed.run_id, deployed.model_uri
                )
            except Exception as error:  # noqa: BLE001 - one bad version must not stop the rest
                _log.exception(
                    "%s v%s: loading %s failed", dataset, deployed.version, deployed.model_uri
                )
                failures[deployed.version] = f"{type(error).__name__}: {error}"
        routes = _routes(state, loaded)
        table = ModelTable(dataset, generation, state, loaded, routes, failures, complete)
        if state.mode != "dynamic" and not self.has_precomputed:
            _log.error(
                "%s: serving mode %s needs a precomputed store and this server has none "
                "(set CASCADE_PRECOMPUTED_INSTANCE); its requests are answered 503",
                dataset,
                state.mode,
            )
        _log.info(
            "%s: serving versions %s with traffic %s",
            dataset,
            sorted(loaded, key=int),
            state.traffic,
        )
        return table

    def _load(self, dataset: str, version: str, run_id: str, model_uri: str) -> Servable:
        started = time.perf_counter()
        local_dir = self._local_copy(dataset, version, model_uri)
        servable = self._loader(local_dir, version, run_id, model_uri)
        _log.info(
            "%s v%s: loaded and warmed up %s in %.2fs",
            dataset,
            version,
            model_uri,
            time.perf_counter() - started,
        )
        return servable

    def _local_copy(self, dataset: str, version: str, model_uri: str) -> Path:
        """The model's files in the cache (downloaded once; safe across worker processes)."""
        digest = hashlib.sha256(model_uri.encode()).hexdigest()[:16]
        target = self.cache_dir / dataset / f"v{version}-{digest}"
        if (target / "saved_model.pb").is_file():
            return target
        staging = target.parent / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self._storage_client().download_tree(model_uri, staging)
            try:
                staging.rename(target)
            except OSError:  # another worker finished first
                if not (target / "saved_model.pb").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _artifacts_store(self) -> ArtifactStore:
        if self._artifacts is None:
            self._artifacts = self._make_artifacts()
        return self._artifacts

    def _storage_client(self) -> UriReader:
        if self._storage is None:
            self._storage = self._make_storage()
        return self._storage
