"""The local twin of Cloud Storage's same-object mutation limit (``localcloud.gcs_front``).

fake-gcs-server runs behind the front, reached through the real storage client
(STORAGE_EMULATOR_HOST), as every client of the local cloud reaches it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import google.cloud.storage as storage
import pytest
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials

from cascade.core.errors import TransientError
from cascade.core.store import ArtifactStore
from cascade.localcloud.gcs_front import ObjectWriteLimit, mutated_object, rate_limit_body
from tests.unit.gcs_front_process import running_gcs_front

NO_RETRY = Retry(predicate=lambda _error: False)


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server behind the front; yields the front's URL."""
    with running_gcs_front(tmp_path_factory.mktemp("gcs-front")) as url:
        yield url


@pytest.fixture
def bucket(front: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", front)
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    name = f"b-{request.node.name.replace('_', '-')[:40].lower()}"
    with contextlib.suppress(gexc.Conflict):
        client.create_bucket(name)
    return client.bucket(name)


def test_a_second_write_of_one_object_within_a_second_is_429_with_googles_body(bucket: Any) -> None:
    blob = bucket.blob("datasets/d/baseline.pb")
    blob.upload_from_string(b"one", retry=NO_RETRY)
    with pytest.raises(gexc.TooManyRequests) as raised:
        bucket.blob("datasets/d/baseline.pb").upload_from_string(b"two", retry=NO_RETRY)
    error = raised.value
    assert error.code == 429
    assert error.response.json() == rate_limit_body(bucket.name, "datasets/d/baseline.pb")
    assert error.response.json()["error"]["errors"][0]["reason"] == "rateLimitExceeded"
    assert "exceeded the rate limit for object mutation operations" in error.message
    assert bucket.blob("datasets/d/baseline.pb").download_as_bytes() == b"one"


def test_other_objects_are_written_at_once(bucket: Any) -> None:
    for index in range(20):
        bucket.blob(f"files/{index}.pb").upload_from_string(b"x%d" % index, retry=NO_RETRY)
    names = [blob.name for blob in bucket.client.list_blobs(bucket)]
    assert len(names) == 20


def test_the_object_can_be_written_again_after_the_interval(bucket: Any) -> None:
    blob = bucket.blob("pointer.json")
    blob.upload_from_string(b"1", retry=NO_RETRY)
    deadline = time.monotonic() + 5
    while True:  # the next write succeeds once the interval has passed
        try:
            bucket.blob("pointer.json").upload_from_string(b"2", retry=NO_RETRY)
            break
        except gexc.TooManyRequests:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert bucket.blob("pointer.json").download_as_bytes() == b"2"


def test_delete_metadata_patch_compose_and_copy_count_as_mutations(bucket: Any) -> None:
    bucket.blob("a").upload_from_string(b"a", retry=NO_RETRY)
    with pytest.raises(gexc.TooManyRequests):
        bucket.blob("a").delete(retry=NO_RETRY)
    bucket.blob("b").upload_from_string(b"b", retry=NO_RETRY)
    patched = bucket.blob("b")
    patched.metadata = {"k": "v"}
    with pytest.raises(gexc.TooManyRequests):
        patched.patch(retry=NO_RETRY)
    bucket.blob("c").upload_from_string(b"c", retry=NO_RETRY)
    bucket.blob("d").upload_from_string(b"d", retry=NO_RETRY)
    composed = bucket.blob("c")
    with pytest.raises(gexc.TooManyRequests):
        composed.compose([bucket.blob("c"), bucket.blob("d")], retry=NO_RETRY)
    with pytest.raises(gexc.TooManyRequests):
        bucket.copy_blob(bucket.blob("c"), bucket, "d", retry=NO_RETRY)
    bucket.copy_blob(bucket.blob("c"), bucket, "e", retry=NO_RETRY)  # a new name: fine


def test_a_conditional_copy_onto_an_existing_name_is_412_as_cloud_storage_answers(
    bucket: Any,
) -> None:
    """fake-gcs-server copies over an existing name whatever ifGenerationMatch says; the
    front answers Cloud Storage's 412, and a copy whose precondition holds goes through
    (landing a BigQuery export's shards create-only relies on it)."""
    bucket.blob("shard").upload_from_string(b"s", retry=NO_RETRY)
    bucket.blob("landed").upload_from_string(b"old", retry=NO_RETRY)
    landed = bucket.get_blob("landed")

    with pytest.raises(gexc.PreconditionFailed) as refused:
        bucket.copy_blob(
            bucket.blob("shard"), bucket, "landed", if_generation_match=0, retry=NO_RETRY
        )
    with pytest.raises(gexc.PreconditionFailed):
        bucket.copy_blob(
            bucket.blob("shard"),
            bucket,
            "landed",
            if_generation_match=landed.generation + 1,
            retry=NO_RETRY,
        )
    bucket.copy_blob(bucket.blob("shard"), bucket, "new", if_generation_match=0, retry=NO_RETRY)

    assert "At least one of the pre-conditions you specified did not hold." in str(refused.value)
    assert [error["reason"] for error in refused.value.errors] == ["conditionNotMet"]
    assert bucket.blob("landed").download_as_bytes() == b"old"
    assert bucket.blob("new").download_as_bytes() == b"s"


def test_a_failed_precondition_does_not_spend_the_allowance(bucket: Any) -> None:
    bucket.blob("claim").upload_from_string(b"1", if_generation_match=0, retry=NO_RETRY)
    with pytest.raises(gexc.TooManyRequests):
        bucket.blob("claim").upload_from_string(b"2", if_generation_match=0, retry=NO_RETRY)
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("fresh").upload_from_string(b"2", if_generation_match=5, retry=NO_RETRY)
    bucket.blob("fresh").upload_from_string(b"3", retry=NO_RETRY)  # 412 spent nothing


def test_reads_lists_and_ranged_downloads_pass_through(bucket: Any) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    bucket.blob("read-me").upload_from_string(data, retry=NO_RETRY)
    for _ in range(5):
        assert bucket.blob("read-me").download_as_bytes() == data
    assert bucket.blob("read-me").download_as_bytes(start=1000, end=1999) == data[1000:2000]
    assert [blob.name for blob in bucket.client.list_blobs(bucket, prefix="read")] == ["read-me"]


def test_multi_megabyte_multipart_and_resumable_uploads_arrive_intact(bucket: Any) -> None:
    data = os.urandom(6 * 1024 * 1024 + 123)
    bucket.blob("multipart.bin").upload_from_string(data, retry=NO_RETRY)
    assert bucket.blob("multipart.bin").download_as_bytes() == data
    resumable = bucket.blob("resumable.bin", chunk_size=2 * 1024 * 1024)
    resumable.upload_from_string(data, retry=NO_RETRY)
    assert bucket.blob("resumable.bin").download_as_bytes() == data
    again = bucket.blob("resumable.bin", chunk_size=2 * 1024 * 1024)
    with pytest.raises(gexc.TooManyRequests):
        again.upload_from_string(data[: 3 * 1024 * 1024], retry=NO_RETRY)
    assert bucket.blob("resumable.bin").download_as_bytes() == data


def test_the_storage_clients_default_retry_rides_out_the_limit(bucket: Any) -> None:
    """A conditional write retries 429 with backoff (the client's default policy)."""
    bucket.blob("retried").upload_from_string(b"1", if_generation_match=0)
    generation = bucket.get_blob("retried").generation
    bucket.blob("retried").upload_from_string(b"2", if_generation_match=generation)
    assert bucket.blob("retried").download_as_bytes() == b"2"


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/storage/v1/b/bk/o/a%2Fb", {}, None),
        ("PATCH", "/storage/v1/b/bk/o/a%2Fb", {}, ("bk", "a/b")),
        ("DELETE", "/storage/v1/b/bk/o/a%2Fb", {}, ("bk", "a/b")),
        ("POST", "/storage/v1/b/bk/o/dst/compose", {}, ("bk", "dst")),
        ("POST", "/storage/v1/b/s/o/src/rewriteTo/b/d/o/x%2Fy", {}, ("d", "x/y")),
        (
            "POST",
            "/upload/storage/v1/b/bk/o",
            {"uploadType": ["media"], "name": ["n"]},
            ("bk", "n"),
        ),
        ("POST", "/upload/storage/v1/b/bk/o", {"uploadType": ["resumable"], "name": ["n"]}, None),
        ("PUT", "/bk/some/object", {}, ("bk", "some/object")),
        ("GET", "/bk/some/object", {}, None),
        ("GET", "/storage/v1/b/bk/o", {}, None),
        ("DELETE", "/storage/v1/b/bk", {}, None),
    ],
)
def test_which_requests_are_mutations(
    method: str, path: str, query: dict[str, list[str]], expected: tuple[str, str] | None
) -> None:
    assert mutated_object(method, path, query) == expected


def test_the_limit_is_per_name_and_gives_back_a_failed_mutation() -> None:
    now = [100.0]
    limit = ObjectWriteLimit(2.0, clock=lambda: now[0])
    assert limit.reserve(("b", "o")) is not None
    assert limit.reserve(("b", "o")) is None
    assert limit.reserve(("b", "other")) is not None
    now[0] += 0.3
    assert limit.reserve(("b", "o")) is None
    now[0] += 0.25  # 0.55 s after: above 1 / 2.0
    reservation = limit.reserve(("b", "o"))
    assert reservation is not None
    limit.release(reservation)  # that mutation failed: it spent nothing
    assert limit.reserve(("b", "o")) is not None
    assert limit.reserve(("b", "o")) is None


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [
        (
            "POST",
            "/upload/storage/v1/b/hostile/o?uploadType=multipart",
            {"Content-Type": "multipart/related; boundary=x"},
            b"--x\r\nContent-Type: application/json\r\n\r\n{not json\r\n--x--",
        ),
        (
            "POST",
            "/upload/storage/v1/b/hostile/o?uploadType=multipart",
            {"Content-Type": "multipart/related"},
            b"\x00" * 70_000,
        ),
        (
            "POST",
            "/upload/storage/v1/b/hostile/o?uploadType=resumable",
            {"Content-Type": "application/json"},
            b'{"name": ["a list"]}',
        ),
        (
            "PUT",
            "/upload/storage/v1/b/hostile/o?upload_id=unknown",
            {"Content-Range": "bytes garbage"},
            b"x",
        ),
        ("DELETE", "/storage/v1/b/hostile/o/%2e%2e%2F%2e%2e%2Fetc%2Fpasswd", {}, b""),
        ("PATCH", "/storage/v1/b/hostile/o/%ZZ", {}, b"{}"),
        ("PUT", "/hostile/..%2F..%2Fx", {}, b"x"),
    ],
)
def test_hostile_requests_get_the_backends_answer_and_the_front_keeps_serving(
    front: str, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    response = requests.request(method, front + path, headers=headers, data=body, timeout=10)

    assert response.status_code < 500 or response.status_code == 503, response.text
    assert requests.get(f"{front}/storage/v1/b", timeout=5).status_code == 200


def test_the_artifact_store_retries_a_rate_limited_write_and_can_give_way(bucket: Any) -> None:
    """``ArtifactStore.write`` rides the limit out with backoff (nothing was written by a
    429, so retrying is safe); ``retry=False`` gives way at once with a TransientError."""
    store = ArtifactStore(bucket.client, bucket.name)
    first = store.write("state.json", b"1")
    second = store.write("state.json", b"2")  # within the second: 429, retried
    assert first is not None
    assert second is not None
    assert store.read("state.json") is not None
    assert store.read("state.json").data == b"2"  # type: ignore[union-attr]
    with pytest.raises(TransientError) as raised:
        store.write("state.json", b"3", if_generation_match=second, retry=False)
    assert isinstance(raised.value.__cause__, gexc.TooManyRequests)


def test_an_unconditional_write_retries_a_429_and_a_broken_connection_only() -> None:
    """A connection the server closed before answering (a stale keep-alive connection)
    is retried like a 429: at worst the writer writes the same bytes to the same name
    again. Other errors are the caller's (a 503 becomes a TransientError)."""
    from cascade.core.store import RATE_LIMITED_RETRY

    predicate = RATE_LIMITED_RETRY._predicate
    broken = requests.exceptions.ConnectionError("Remote end closed connection without response")
    assert predicate(broken)
    assert predicate(gexc.TooManyRequests("slow down"))
    assert not predicate(gexc.ServiceUnavailable("busy"))
    assert not predicate(gexc.PreconditionFailed("changed"))
    assert not predicate(ValueError("a bug"))
