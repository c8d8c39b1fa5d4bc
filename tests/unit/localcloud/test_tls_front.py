"""The TLS front of the Google API twins: ALPN routing, and a stop that closes every socket.

A socket the front accepted but did not close is found only when the garbage collector
takes it, in whatever test runs next, as an unraisable ``ResourceWarning``; these tests
stop the front with connections in every state and collect at once, so such a leak fails
here, under the name of the behaviour it breaks.
"""

from __future__ import annotations

import gc
import socket
import ssl
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

import pytest

from cascade.localcloud.tls_front import AlpnFront, TlsFiles, local_certificates

DEADLINE = 10.0


class EchoBackend:
    """A plain-TCP backend on loopback that answers each line with a label and the line."""

    def __init__(self, label: bytes) -> None:
        self.label = label
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    def _echo(self, connection: socket.socket) -> None:
        with connection:
            while data := connection.recv(4096):
                connection.sendall(self.label + b":" + data)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return local_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def backends() -> Iterator[dict[str, EchoBackend]]:
    made = {"h2": EchoBackend(b"grpc"), "http/1.1": EchoBackend(b"rest")}
    yield made
    for backend in made.values():
        backend.close()


@pytest.fixture
def front(files: TlsFiles, backends: dict[str, EchoBackend]) -> Iterator[AlpnFront]:
    started = AlpnFront(
        "127.0.0.1",
        0,
        files,
        {name: ("127.0.0.1", backend.port) for name, backend in backends.items()},
    )
    started.start()
    yield started
    started.stop()


def client_context(files: TlsFiles, protocols: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files.ca))
    if protocols:
        context.set_alpn_protocols(protocols)
    return context


def tls_client(front: AlpnFront, files: TlsFiles, protocols: list[str]) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", front.port), timeout=DEADLINE)
    return client_context(files, protocols).wrap_socket(raw, server_hostname="127.0.0.1")


def ask(connection: ssl.SSLSocket, line: bytes) -> bytes:
    connection.sendall(line)
    return connection.recv(4096)


@pytest.mark.parametrize(
    ("protocols", "answer"),
    [(["h2"], b"grpc:ping"), (["http/1.1"], b"rest:ping"), ([], b"rest:ping")],
)
def test_each_connection_reaches_the_backend_its_alpn_protocol_names(
    front: AlpnFront, files: TlsFiles, protocols: list[str], answer: bytes
) -> None:
    with tls_client(front, files, protocols) as connection:
        assert ask(connection, b"ping") == answer


def test_a_client_that_does_not_trust_the_local_ca_is_refused(front: AlpnFront) -> None:
    raw = socket.create_connection(("127.0.0.1", front.port), timeout=DEADLINE)
    with pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    raw.close()


def unclosed_sockets_collected(action: Callable[[], None]) -> list[str]:
    """What the garbage collector reports as unclosed (sockets, transports) after
    ``action``: warnings raised in ``__del__`` reach ``sys.unraisablehook``."""
    found: list[str] = []
    previous = sys.unraisablehook

    def hook(unraisable: object) -> None:
        found.append(repr(getattr(unraisable, "exc_value", unraisable)))

    gc.collect()  # what earlier tests left is theirs, not this action's
    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings():
            # An error in ``__del__`` goes to the unraisable hook, from any thread.
            warnings.simplefilter("error", ResourceWarning)
            action()
            gc.collect()
            gc.collect()
    finally:
        sys.unraisablehook = previous
    return [entry for entry in found if "unclosed" in entry]


def test_stop_closes_connections_in_every_state_before_the_loop_ends(
    files: TlsFiles, backends: dict[str, EchoBackend]
) -> None:
    front = AlpnFront(
        "127.0.0.1",
        0,
        files,
        {name: ("127.0.0.1", backend.port) for name, backend in backends.items()},
    )
    front.start()
    clients: list[socket.socket] = []

    def connect_and_stop() -> None:
        # Accepted, not a byte sent (the handshake is still awaited).
        clients.extend(
            socket.create_connection(("127.0.0.1", front.port), timeout=DEADLINE) for _ in range(5)
        )
        # Mid-handshake: a ClientHello's first bytes and no more.
        for _ in range(5):
            half = socket.create_connection(("127.0.0.1", front.port), timeout=DEADLINE)
            half.sendall(b"\x16\x03\x01\x00")
            clients.append(half)
        # Established and piping to a backend, with an answer read.
        for protocols in (["h2"], ["http/1.1"]) * 3:
            connection = tls_client(front, files, protocols)
            assert ask(connection, b"x").endswith(b":x")
            clients.append(connection)
        # Connected and stopped at once, before the front's loop has handled them.
        for _ in range(20):
            clients.append(socket.socket())
            clients[-1].setblocking(False)
            clients[-1].connect_ex(("127.0.0.1", front.port))
        front.stop()

    try:
        leaked = unclosed_sockets_collected(connect_and_stop)
    finally:
        for client in clients:
            client.close()
    assert leaked == []


def test_stop_ends_the_clients_connections(front: AlpnFront, files: TlsFiles) -> None:
    connection = tls_client(front, files, ["h2"])
    assert ask(connection, b"a") == b"grpc:a"
    front.stop()
    with connection:
        connection.settimeout(DEADLINE)
        try:
            end = connection.recv(4096)
        except (ConnectionResetError, ssl.SSLError):
            end = b""  # aborted: an end all the same
    assert end == b""


def test_stop_is_safe_twice(front: AlpnFront) -> None:
    front.stop()
    front.stop()
