"""What Cascade's storage clients send to Cloud Storage (fake-gcs-server here), beyond
the calls Cascade makes: nothing.

google-cloud-storage 3.11+ probes each bucket it touches (``buckets.get`` on a
background thread: on first use, and again after every object 404) to label
OpenTelemetry spans. A function's service account holds object permissions only, so on
Google Cloud every probe is refused and logged as a denied call
(googleapis/google-cloud-python#17650), and a step checks for missing objects all the
time. ``new_storage_client`` turns the probe off; the control below shows the probe is
real, so the first test would see it.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from cascade.core.clients import make_storage_client
from cascade.core.grants import LocalIdentity
from cascade.core.settings import Settings
from cascade.core.store import ArtifactStore
from tests.integration.fake_gcs import gcs_fixture  # noqa: F401 - the `gcs` fixture

pytestmark = pytest.mark.integration

THREAD_DEADLINE_S = 10.0
BUCKET_PATH = "/storage/v1/b/artifacts"
VALIDATE = LocalIdentity(
    principal="cascade-validate@cascade-local.iam.gserviceaccount.com",
    name="validate",
    read=frozenset({"landing"}),
    write=frozenset({"artifacts"}),
)


def _recorded(client: storage.Client) -> list[tuple[str, str]]:
    """Every request ``client`` sends from now on, from any thread: (method, path)."""
    seen: list[tuple[str, str]] = []
    session = client._http
    send = session.request

    def request(method: str, url: str, *args: object, **kwargs: object) -> object:
        seen.append((method.upper(), urlsplit(url).path))
        return send(method, url, *args, **kwargs)

    session.request = request
    return seen


def _step_like_calls(client: storage.Client) -> None:
    """What a step does all day: write, read, and look for objects that are not there."""
    store = ArtifactStore(client, "artifacts")
    assert store.create("runs/r/claims/validate.json", b"{}") is not None
    assert store.read("runs/r/results/validate.json") is None
    assert store.stat("datasets/d/schema.pbtxt") is None
    stored = store.read("runs/r/claims/validate.json")
    assert stored is not None
    assert stored.data == b"{}"


def _background_threads_done() -> None:
    """Wait for the client's probe threads started so far (named after their target)."""
    for thread in threading.enumerate():
        if thread.name.endswith("_background)"):
            thread.join(THREAD_DEADLINE_S)
            assert not thread.is_alive(), f"{thread.name} still running"


@pytest.fixture(name="settings")
def settings_fixture(gcs: tuple[str, storage.Client]) -> Settings:
    url, _ = gcs
    return Settings(
        project="cascade-local",
        storage_emulator_host=url,
        landing_bucket="landing",
        artifacts_bucket="artifacts",
        local_identity=VALIDATE,
    )


def test_a_function_client_sends_only_the_calls_it_makes(settings: Settings) -> None:
    client = make_storage_client(settings)
    seen = _recorded(client)

    _step_like_calls(client)
    _background_threads_done()

    assert [path for _, path in seen if path == BUCKET_PATH] == []
    assert len(seen) == 4  # the create, the two misses, the read


def test_control_the_stock_client_probes_the_bucket_after_a_miss(
    gcs: tuple[str, storage.Client],
) -> None:
    """If this fails, the client no longer probes buckets: ``new_storage_client``'s
    workaround can go, and the test above proves nothing any more."""
    url, _ = gcs
    client = storage.Client(
        project="cascade-local",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": url},
    )
    seen = _recorded(client)

    _step_like_calls(client)
    _background_threads_done()

    assert ("GET", BUCKET_PATH) in seen
