"""Cloud Run's instance limit, request timeout and memory limit around each local function.

At most ``max_instances`` requests of a function run at once, one per instance; one that
finds them all busy waits for an instance and, past the pending window, is answered 429
with Cloud Run's text. A function that runs past its ``timeout_s`` is answered 504 with
Cloud Run's text and keeps running; one whose memory goes over its ``memory`` is
terminated with Cloud Run's log line, and the supervisor starts it again. The last tests
run the real host (functions-framework's app and server) in a process of its own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cascade.core.topology import FunctionDefaults
from cascade.localcloud.function_host import (
    INSTANCE_BUSY_BODY,
    MEMORY_LIMIT_EXIT,
    TIMEOUT_BODY,
    InstanceLimit,
    MemoryLimit,
    RequestTimeout,
    memory_bytes,
    resident_bytes,
    terminated_for_memory,
)
from cascade.localcloud.id_tokens import LocalIdTokens, bearer_header
from cascade.localcloud.processes import free_loopback_port, port_accepts, wait_until

DEADLINE_S = 30


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("512Mi", 512 << 20), ("2Gi", 2 << 30), ("1G", 10**9), ("256M", 256 * 10**6), ("4096", 4096)],
)
def test_memory_quantities_are_terraform_s(quantity: str, expected: int) -> None:
    assert memory_bytes(quantity) == expected


@pytest.mark.parametrize(
    "quantity", ["", "0", "0Mi", "-1Mi", "1.5Gi", "512MB", "512mi", "1Ti", "Mi", "512 Mi\n1"]
)
def test_other_memory_quantities_are_refused_here_and_in_the_topology(quantity: str) -> None:
    with pytest.raises(ValueError, match="memory"):
        memory_bytes(quantity)
    with pytest.raises(ValueError, match="memory"):
        FunctionDefaults(memory=quantity)


def _call(app: Callable[..., Any]) -> tuple[str, list[Any], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[Any]) -> None:
        seen["status"], seen["headers"] = status, headers

    body = b"".join(app({"PATH_INFO": "/"}, start_response))
    return seen["status"], seen["headers"], body


def test_a_request_past_the_timeout_is_answered_504_and_goes_on_running() -> None:
    release, finished = threading.Event(), threading.Event()

    def slow(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        release.wait(DEADLINE_S)
        finished.set()
        start_response("200 OK", [])
        return [b"late"]

    status, headers, body = _call(RequestTimeout(slow, 0.05, function="validate"))

    assert status == "504 Gateway Timeout"
    assert body == TIMEOUT_BODY
    assert headers == [("Content-Type", "text/plain; charset=utf-8")]  # no hop-by-hop header
    assert not finished.is_set()  # still running, as on Cloud Run
    release.set()
    assert finished.wait(DEADLINE_S)


def test_an_answer_within_the_timeout_passes_through_unchanged() -> None:
    def quick(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        write = start_response("201 Created", [("X-Step", "validate")])
        write(b"a")
        yield b"b"

    assert _call(RequestTimeout(quick, DEADLINE_S)) == (
        "201 Created",
        [("X-Step", "validate")],
        b"ab",
    )


def test_an_error_within_the_timeout_is_the_server_s_to_answer() -> None:
    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _call(RequestTimeout(broken, DEADLINE_S))


class _Held:
    """A WSGI app whose requests wait for ``release``, counting those inside it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = 0
        self.most_inside = 0
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            self.calls += 1
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            if environ.get("QUERY_STRING") == "fail":
                raise RuntimeError("boom")
            self.release.wait(DEADLINE_S)
            start_response("200 OK", [])
            return [b"served"]
        finally:
            with self._lock:
                self.inside -= 1


def _in_thread(app: Callable[..., Any], results: list[Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(_call(app)), daemon=True)
    thread.start()
    return thread


def test_a_request_that_finds_every_instance_busy_is_answered_429_after_the_window() -> None:
    held = _Held()
    limit = InstanceLimit(held, 2, pending_s=0.05, function="deploy")
    results: list[Any] = []
    running = [_in_thread(limit, results) for _ in range(2)]
    assert wait_until(lambda: held.inside == 2, DEADLINE_S)

    status, headers, body = _call(limit)

    assert (status, body) == ("429 Too Many Requests", INSTANCE_BUSY_BODY)
    assert headers == [("Content-Type", "text/plain; charset=utf-8")]
    assert held.calls == 2  # it never reached the function
    held.release.set()
    for thread in running:
        thread.join(DEADLINE_S)
    assert [result[2] for result in results] == [b"served", b"served"]
    assert _call(limit)[2] == b"served"  # both instances free again


def test_a_waiting_request_takes_the_first_instance_that_frees() -> None:
    held = _Held()
    limit = InstanceLimit(held, 1, pending_s=DEADLINE_S)
    results: list[Any] = []
    first = _in_thread(limit, results)
    assert wait_until(lambda: held.inside == 1, DEADLINE_S)
    second = _in_thread(limit, results)
    assert wait_until(lambda: limit.pending == 1, DEADLINE_S)  # waiting, not inside

    assert held.calls == 1
    held.release.set()
    first.join(DEADLINE_S)
    second.join(DEADLINE_S)

    assert [result[0] for result in results] == ["200 OK", "200 OK"]
    assert (held.calls, held.most_inside, limit.pending) == (2, 1, 0)


def test_a_request_that_fails_frees_its_instance() -> None:
    held = _Held()
    held.release.set()
    limit = InstanceLimit(held, 1, pending_s=0.05)

    with pytest.raises(RuntimeError, match="boom"):
        limit({"QUERY_STRING": "fail"}, lambda status, headers: None)

    assert _call(limit)[2] == b"served"


def test_an_instance_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InstanceLimit(_Held(), 0)


def test_memory_over_the_limit_terminates_with_cloud_run_s_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    terminated: list[bool] = []
    used = [100 << 20]
    limit = MemoryLimit(
        512 << 20, measure=lambda: used[0], terminate=lambda: terminated.append(True)
    )

    assert limit.check()
    used[0] = 512 << 20
    assert limit.check()  # at the limit is within it
    used[0] = 600 << 20
    assert not limit.check()

    assert terminated == [True]
    assert "Memory limit of 512 MiB exceeded with 600 MiB used." in capsys.readouterr().err


def test_resident_memory_is_measured_as_it_grows() -> None:
    before = resident_bytes()
    ballast = bytearray(64 << 20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page
    assert resident_bytes() - before > 48 << 20
    del ballast


_FUNCTION = textwrap.dedent(
    """
    import threading
    import functions_framework

    held = []
    finished = threading.Event()

    @functions_framework.http
    def grow(request):
        held.append(bytearray(int(request.args["mib"]) << 20))
        held[-1][::4096] = b"x" * len(held[-1][::4096])
        return "grown"

    @functions_framework.http
    def wait(request):
        finished.wait(float(request.args["s"]))
        return "done"
    """
)


def _host(
    tmp_path: Path, target: str, *extra: str
) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    source = tmp_path / "main.py"
    source.write_text(_FUNCTION)
    key = tmp_path / "key.pem"
    LocalIdTokens(key)
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    account = "caller@cascade-local.iam.gserviceaccount.com"
    with (tmp_path / "host.log").open("wb") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cascade.localcloud.function_host",
                *("--target", target, "--source", str(source), "--host", "127.0.0.1"),
                *("--port", str(port), "--function", "f", "--audience", url),
                *("--key-file", str(key), "--invokers", f"serviceAccount:{account}"),
                *extra,
            ],
            stderr=log,
            cwd=tmp_path,
        )
    started = wait_until(
        lambda: process.poll() is not None or port_accepts("127.0.0.1", port), DEADLINE_S
    )
    assert started, "the function host did not start"
    assert process.poll() is None, (tmp_path / "host.log").read_text()
    return process, url, bearer_header(key, url, account)


def test_the_host_terminates_an_instance_that_outgrows_its_memory(tmp_path: Path) -> None:
    """The whole instance goes (gunicorn's arbiter with its worker, where the function
    runs), killed as the OOM killer kills, and the request that outgrew it never gets
    its answer."""
    process, url, auth = _host(tmp_path, "grow", "--memory", "256Mi")
    try:
        assert requests.get(f"{url}/?mib=16", headers=auth, timeout=DEADLINE_S).text == "grown"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/?mib=400", headers=auth, timeout=DEADLINE_S)
        assert process.wait(DEADLINE_S) == MEMORY_LIMIT_EXIT
        assert "Memory limit of 256 MiB exceeded with" in (tmp_path / "host.log").read_text()
        assert terminated_for_memory(process.returncode, tmp_path / "host.log")  # supervisor
    finally:
        process.kill()
        process.wait(DEADLINE_S)


def test_the_host_answers_504_past_the_function_s_timeout(tmp_path: Path) -> None:
    process, url, auth = _host(tmp_path, "wait", "--timeout-s", "1")
    try:
        late = requests.get(f"{url}/?s=20", headers=auth, timeout=DEADLINE_S)
        quick = requests.get(f"{url}/?s=0", headers=auth, timeout=DEADLINE_S)
        unauthenticated = requests.get(f"{url}/?s=0", timeout=DEADLINE_S)

        assert (late.status_code, late.content) == (504, TIMEOUT_BODY)
        assert (quick.status_code, quick.text) == (200, "done")
        assert unauthenticated.status_code == 403  # the invoker check still comes first
    finally:
        process.kill()
        process.wait(DEADLINE_S)


def test_the_host_runs_at_most_max_instances_requests_at_once(tmp_path: Path) -> None:
    """One instance: a second request while the first runs waits out the pending window
    and is answered 429; a caller without a token is refused 403 before any instance is
    taken."""
    process, url, auth = _host(tmp_path, "wait", "--max-instances", "1", "--pending-s", "1")
    try:
        first: list[requests.Response] = []
        thread = threading.Thread(
            target=lambda: first.append(
                requests.get(f"{url}/?s=5", headers=auth, timeout=DEADLINE_S)
            ),
            daemon=True,
        )
        thread.start()
        busy = wait_until(
            lambda: (
                requests.get(f"{url}/?s=0", headers=auth, timeout=DEADLINE_S).status_code == 429
            ),
            DEADLINE_S,
        )
        unauthenticated = requests.get(f"{url}/?s=0", timeout=DEADLINE_S)
        thread.join(DEADLINE_S)
        after = requests.get(f"{url}/?s=0", headers=auth, timeout=DEADLINE_S)

        assert busy, "no 429 while the only instance was busy"
        assert unauthenticated.status_code == 403
        assert [(answer.status_code, answer.text) for answer in first] == [(200, "done")]
        assert (after.status_code, after.text) == (200, "done")
    finally:
        process.kill()
        process.wait(DEADLINE_S)
