"""A function of the local cloud behind Cloud Run's invoker check, instance limit, request
timeout and memory limit.

``python -m cascade.localcloud.function_host`` serves one function as
``python -m functions_framework`` does (its own app and server), with what Cloud Run
puts around it:

- ``id_tokens.InvokerCheck``: only an ID token of the local issuer, for the function's
  URL, naming one of the function's invokers, reaches the function. An HTTP function's
  invokers are its topology group's members; an event function's, the invoker account
  alone (the event router delivers as it, as Eventarc and Pub/Sub push do).
- ``RequestTimeout``: a request that has no answer after the function's ``timeout_s``
  is answered 504 with Cloud Run's text, and the function's code goes on running
  (Cloud Run "closes the network connection and returns an HTTP 504 error. Closing the
  connection doesn't terminate the container instance",
  cloud.google.com/run/docs/configuring/request-timeout). The event router counts the
  504 as a failed delivery and retries, so the step can run twice at once, as in the
  cloud.
- ``MemoryLimit``: an instance whose memory goes over the function's ``memory`` is
  terminated ("Cloud Run instances that exceed their allowed memory limit are
  terminated", cloud.google.com/run/docs/configuring/services/memory-limits), with
  Cloud Run's log line ``Memory limit of N MiB exceeded with M MiB used.``; its requests
  fail, and the supervisor starts a new instance.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from cascade.core.topology import MEMORY_QUANTITY

__all__ = [
    "INSTANCE_BUSY_BODY",
    "MEMORY_LIMIT_EXIT",
    "PENDING_S",
    "TIMEOUT_BODY",
    "InstanceLimit",
    "MemoryLimit",
    "RequestTimeout",
    "answer_within_s",
    "main",
    "memory_bytes",
    "peak_resident_bytes",
    "resident_bytes",
    "terminated_for_memory",
]

_log = logging.getLogger(__name__)

TIMEOUT_BODY = (
    b"The request has been terminated because it has reached the maximum request timeout. "
    b"To change this limit, see "
    b"https://cloud.google.com/run/docs/configuring/request-timeout"
)
"""Cloud Run's 504 text for a request past the service's timeout."""

INSTANCE_BUSY_BODY = (
    b"The request was aborted because there was no available instance.\n"
    b"Additional troubleshooting documentation can be found at: "
    b"https://cloud.google.com/run/docs/troubleshooting#abort-request"
)
"""Cloud Run's 429 text for a request no instance took within the pending window."""

PENDING_S = 10.0
"""How long a request waits for a free instance once every instance is busy: Cloud Run
holds it "for up to 10 seconds" when no new instance can start (the service is at its
maximum instances), then answers 429."""


def answer_within_s(timeout_s: float) -> float:
    """The longest a request to a function waits for its answer: the pending window for an
    instance, then the function's timeout (after which the answer is a 504)."""
    return PENDING_S + timeout_s


PENDING_THREADS = 32
"""Server threads beyond ``max_instances``: each holds a request waiting (timed) for an
instance. The event router sends at most 16 at once per subscription."""

MEMORY_LIMIT_EXIT = -signal.SIGKILL
"""How the supervisor sees an instance terminated for its memory: killed, as by the
kernel's OOM killer (``Popen.returncode`` -9), with Cloud Run's line last in its log
(``terminated_for_memory``)."""

MEMORY_LINE = "Memory limit of "
_LOG_TAIL_BYTES = 8192


def terminated_for_memory(returncode: int | None, log_path: Path) -> bool:
    """Whether a host that exited with ``returncode`` was terminated for its memory:
    killed, and Cloud Run's memory line is among the last lines of its log (a SIGKILL
    from anyone else leaves no such line)."""
    if returncode != MEMORY_LIMIT_EXIT:
        return False
    try:
        with log_path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return False
    last = [line for line in tail.splitlines() if line.strip()][-3:]
    return any(line.startswith(MEMORY_LINE) for line in last)


_QUANTITY = re.compile(MEMORY_QUANTITY)
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "Mi": 2**20, "Gi": 2**30}


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def memory_bytes(quantity: str) -> int:
    """A function's memory quantity (``512Mi``, ``2Gi``, ``1G``; ``MEMORY_QUANTITY``) in
    bytes; ValueError for anything else."""
    match = _QUANTITY.fullmatch(quantity.strip())
    if match is None:
        raise ValueError(f"not a memory quantity such as 512Mi or 2Gi: {quantity!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def resident_bytes() -> int:
    """This process's resident memory now (Linux: ``/proc/self/statm``)."""
    with open("/proc/self/statm", "rb") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    """The most resident memory this process has held (Linux: ``VmHWM`` of
    ``/proc/self/status``, the kernel's high-water mark: no peak between two looks is
    missed)."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return resident_bytes()


class MemoryLimit:
    """Terminates this process once its memory has gone over ``limit``.

    The measure is the kernel's high-water mark of resident memory, looked at every
    ``interval_s`` and before every answer (``wrap``): a request whose memory went over
    the limit at any moment never gets its answer, as on Cloud Run, where the instance
    is gone by then. What Cloud Run also counts and this does not: files written to the
    instance's in-memory filesystem, and other processes of the container.
    """

    def __init__(
        self,
        limit: int,
        *,
        interval_s: float = 0.05,
        measure: Callable[[], int] = peak_resident_bytes,
        terminate: Callable[[], Any] | None = None,
    ) -> None:
        self.limit = limit
        self.interval_s = interval_s
        self._measure = measure
        self._terminate = terminate or _end_instance(os.getpid())
        self._stopping = threading.Event()

    def check(self) -> bool:
        """One sample; over the limit: log Cloud Run's line and terminate."""
        used = self._measure()
        if used <= self.limit:
            return True
        line = (
            f"{MEMORY_LINE}{self.limit >> 20} MiB exceeded with {used >> 20} MiB used. "
            "Consider increasing the memory limit, see "
            "https://cloud.google.com/run/docs/configuring/memory-limits"
        )
        print(line, file=sys.stderr, flush=True)  # the platform's line, last in the log
        self._terminate()
        return False

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """``app`` with a look at the memory after it answered, before the answer goes."""

        def checked(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            parts = _drained(app(environ, start_response))
            self.check()
            return parts

        return checked

    def start(self) -> None:
        def watch() -> None:
            while not self._stopping.wait(self.interval_s) and self.check():
                pass

        threading.Thread(target=watch, name="memory-limit", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()


def _end_instance(host_pid: int) -> Callable[[], None]:
    """The whole instance killed: the host process (gunicorn's arbiter, which started
    this worker) and this process."""

    def end() -> None:
        os.kill(host_pid, signal.SIGKILL)
        os._exit(1)  # a worker, when the host is another process

    return end


def _drained(body: Iterable[bytes]) -> list[bytes]:
    """A WSGI body read whole, and closed."""
    try:
        return list(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


class InstanceLimit:
    """At most ``max_instances`` requests of ``app`` at once, each on an instance of its
    own (concurrency 1); one that finds them all busy waits ``pending_s`` for an instance
    and is then answered 429 with Cloud Run's text, never reaching ``app``.

    The instances here are threads of one process: what is limited is how many requests
    run at once, not what they share (Cloud Run's instances share no memory)."""

    def __init__(
        self,
        app: WsgiApp,
        max_instances: int,
        *,
        pending_s: float = PENDING_S,
        function: str = "",
    ) -> None:
        if max_instances < 1:
            raise ValueError(f"max_instances must be at least 1, not {max_instances}")
        self.app = app
        self.max_instances = max_instances
        self.pending_s = pending_s
        self.function = function
        self._free = threading.BoundedSemaphore(max_instances)
        self._counting = threading.Lock()
        self.pending = 0
        """Requests waiting for an instance now."""

    def _take(self) -> bool:
        with self._counting:
            self.pending += 1
        try:
            return self._free.acquire(timeout=self.pending_s)
        finally:
            with self._counting:
                self.pending -= 1

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not self._take():
            _log.warning(
                "%s: all %d instances busy for %ss: 429, no available instance",
                self.function,
                self.max_instances,
                self.pending_s,
            )
            start_response("429 Too Many Requests", [("Content-Type", "text/plain; charset=utf-8")])
            return [INSTANCE_BUSY_BODY]
        try:  # the instance is busy until its answer is whole
            return _drained(self.app(environ, start_response))
        finally:
            self._free.release()


class RequestTimeout:
    """Answers 504 with Cloud Run's text when ``app`` has not answered within
    ``timeout_s``; the request's code keeps running in its thread, as on Cloud Run."""

    def __init__(self, app: WsgiApp, timeout_s: float, *, function: str = "") -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.function = function

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        done = threading.Event()
        answer: dict[str, Any] = {}

        def respond() -> None:
            parts: list[bytes] = []

            def capture(status: str, headers: list[Any], exc_info: Any = None) -> Any:
                answer["status"], answer["headers"] = status, headers
                return parts.append  # WSGI's write()

            try:
                parts.extend(_drained(self.app(environ, capture)))
                answer["body"] = b"".join(parts)
            except BaseException as error:  # noqa: BLE001 - handed to the serving thread
                answer["error"] = error
            finally:
                done.set()

        threading.Thread(target=respond, name="request", daemon=True).start()
        if not done.wait(self.timeout_s):
            _log.error(
                "%s: no answer within the function's timeout (%ss): 504, the request "
                "goes on running",
                self.function,
                self.timeout_s,
            )
            start_response("504 Gateway Timeout", [("Content-Type", "text/plain; charset=utf-8")])
            return [TIMEOUT_BODY]
        if "error" in answer:
            raise answer["error"]
        start_response(answer["status"], answer["headers"])
        return [answer["body"]]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--signature-type", choices=("http", "cloudevent"), default="http")
    parser.add_argument("--function", required=True, help="The function's topology name.")
    parser.add_argument("--audience", required=True, help="The function's URL.")
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument(
        "--invokers", default="", help="Comma-separated IAM members of its invoker group."
    )
    parser.add_argument("--timeout-s", type=float, default=0, help="0: no request timeout")
    parser.add_argument("--memory", default="", help="Cloud Run quantity; empty: no limit")
    parser.add_argument(
        "--max-instances", type=int, default=0, help="0: no limit on requests at once"
    )
    parser.add_argument("--pending-s", type=float, default=PENDING_S)
    arguments = parser.parse_args(argv)
    limit = MemoryLimit(memory_bytes(arguments.memory)) if arguments.memory else None

    from functions_framework import create_app
    from functions_framework._http import create_server

    from cascade.localcloud.id_tokens import InvokerCheck, LocalIdTokens

    app = create_app(  # type: ignore[no-untyped-call]
        arguments.target, arguments.source, arguments.signature_type
    )
    # From the inside out: the memory looked at before each answer, the request timeout
    # (timed from when an instance takes the request), the instances, and outermost the
    # invoker check, which refuses a caller before any instance is taken.
    if limit is not None:
        app.wsgi_app = limit.wrap(app.wsgi_app)
    if arguments.timeout_s > 0:
        app.wsgi_app = RequestTimeout(
            app.wsgi_app, arguments.timeout_s, function=arguments.function
        )
    options: dict[str, Any] = {}
    if arguments.max_instances > 0:
        app.wsgi_app = InstanceLimit(
            app.wsgi_app,
            arguments.max_instances,
            pending_s=arguments.pending_s,
            function=arguments.function,
        )
        options["threads"] = arguments.max_instances + PENDING_THREADS
    app.wsgi_app = InvokerCheck(
        app.wsgi_app,
        LocalIdTokens(arguments.key_file),
        audience=arguments.audience,
        members=tuple(member for member in arguments.invokers.split(",") if member),
        function=arguments.function,
    )
    if limit is not None:  # watched where the function runs: gunicorn's worker
        options["post_fork"] = lambda server, worker: limit.start()
    create_server(app, False, **options).run(  # type: ignore[no-untyped-call]
        arguments.host, arguments.port
    )


if __name__ == "__main__":
    main()
