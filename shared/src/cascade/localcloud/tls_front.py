"""TLS for the local cloud's Google API twins: a local CA, and one port for gRPC and REST.

Google's client libraries reach an API over TLS only (the gRPC transport builds a secure
channel; the REST transport prefixes ``https://``), and one host serves both transports.
The twin does the same: ``local_certificates`` makes (once, kept in the state folder) a
local certificate authority and a server certificate for ``127.0.0.1``/``localhost``, and
a CA bundle (certifi's roots plus the local CA) that clients trust through
``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` (gRPC) and ``REQUESTS_CA_BUNDLE`` (REST).
``AlpnFront`` terminates TLS on the public port and hands each connection to the backend
the client negotiated by ALPN: ``h2`` (gRPC) or ``http/1.1`` (REST).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["AlpnFront", "TlsFiles", "local_certificates"]

_VALID_DAYS = 3650
_SHUTDOWN_ROUNDS = 50


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    certificate: Path
    key: Path
    bundle: Path
    """certifi's roots plus the local CA: what a client of the twin trusts."""


def local_certificates(directory: Path) -> TlsFiles:
    """The local CA and server certificate under ``directory``, made on first use."""
    files = TlsFiles(
        ca=directory / "ca.pem",
        certificate=directory / "server.pem",
        key=directory / "server-key.pem",
        bundle=directory / "ca-bundle.pem",
    )
    if not all(path.is_file() for path in (files.ca, files.certificate, files.key)):
        directory.mkdir(parents=True, exist_ok=True)
        _write_certificates(files)
    bundle = Path(certifi.where()).read_text() + "\n" + files.ca.read_text()
    if not files.bundle.is_file() or files.bundle.read_text() != bundle:
        _write(files.bundle, bundle.encode())
    return files


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _write_certificates(files: TlsFiles) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Cascade local cloud CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write(files.certificate, server.public_bytes(serialization.Encoding.PEM))
    _write(files.ca, ca.public_bytes(serialization.Encoding.PEM))


class AlpnFront:
    """TLS on ``host:port``; each connection is piped to ``backends[alpn protocol]``
    (plain TCP on loopback). A client that negotiates no protocol gets ``http/1.1``."""

    def __init__(
        self, host: str, port: int, files: TlsFiles, backends: dict[str, tuple[str, int]]
    ) -> None:
        self._host, self._port, self._backends = host, port, backends
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._context.load_cert_chain(files.certificate, files.key)
        self._context.set_alpn_protocols(list(backends))
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tls-front", daemon=True)
        self._server: asyncio.Server | None = None
        # One task per accepted connection, from accept to its end. asyncio keeps only weak
        # references to tasks (a connection still piping the backend's answer would be
        # collected mid-flight without this set), and the shutdown cancels these, never
        # asyncio's own accept tasks: one cancelled before it runs leaks its socket.
        self._handlers: set[asyncio.Task[None]] = set()
        # Every accepted connection's socket transport while it lives. A handler cancelled
        # before its first step never runs its ``finally``, and an SSL close waits for the
        # peer's reply: the shutdown aborts all of them, so that no open socket is left to
        # the garbage collector when the loop ends.
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    def start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    async def _shutdown(self) -> None:
        """Stop listening and end every open connection: also those accepted but not yet
        handled, and those whose TLS handshake finishes while the others end."""
        # Stop accepting, but close the server only once asyncio's accept tasks under way
        # are done: on Python 3.11 one that finds the server closed drops its socket open.
        if self._server is not None:
            for sock in self._server.sockets:
                self._loop.remove_reader(sock.fileno())
        # Handlers first (each closes its own streams), then the sockets: a socket aborted
        # under a TLS handshake in progress leaves its stream writer without a transport.
        # asyncio's accept tasks still running hand over new handlers within a few turns.
        for _ in range(_SHUTDOWN_ROUNDS):
            await _turns()
            if not self._other_tasks():
                break
            await _cancel(list(self._handlers))
        else:  # a task that never ends: cancelled, whatever it is
            await _cancel(self._other_tasks())
        if self._server is not None:
            self._server.close()
        self._abort_transports()
        await _turns()

    def _abort_transports(self) -> None:
        """Abort every connection's socket; a no-op for one already closed. The socket
        closes in a callback: the caller lets the loop turn."""
        for transport in list(self._transports):
            with contextlib.suppress(Exception):
                transport.abort()  # type: ignore[attr-defined]

    @staticmethod
    def _other_tasks() -> list[asyncio.Task[object]]:
        return [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            # Plain TCP, TLS started inside the handler: every accepted connection has a
            # task from its first byte, so stop() ends (and closes) those still in their
            # handshake too, instead of leaving transports for the garbage collector.
            self._server = self._loop.run_until_complete(
                self._loop.create_server(self._protocol, self._host, self._port)
            )
        except BaseException as error:  # noqa: BLE001 - raised again by start()
            self._error = error
            self._started.set()
            return
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            self._loop.close()

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        """``asyncio.start_server``'s protocol, which also records its transport."""
        return _TrackedProtocol(self._transports, asyncio.StreamReader(), self._accepted)

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._loop.create_task(self._serve(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(asyncio.CancelledError):  # stop(): a quiet end
                await self._connect(reader, writer)
        finally:
            with contextlib.suppress(Exception):  # cancelled mid-handshake: still closed
                writer.close()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.start_tls(self._context, ssl_handshake_timeout=10)
        except (TimeoutError, OSError, ssl.SSLError):
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
            return
        ssl_object = writer.get_extra_info("ssl_object")
        protocol = (ssl_object and ssl_object.selected_alpn_protocol()) or "http/1.1"
        host, port = self._backends.get(protocol, self._backends["http/1.1"])
        try:
            backend_reader, backend_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(
                _pipe(reader, backend_writer), _pipe(backend_reader, writer), return_exceptions=True
            )
        finally:  # also when stop() cancels: closed while the loop still runs
            for side in (backend_writer, writer):
                with contextlib.suppress(OSError, RuntimeError, ssl.SSLError):
                    side.close()
            for side in (backend_writer, writer):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(side.wait_closed(), 1)


class _TrackedProtocol(asyncio.StreamReaderProtocol):
    def __init__(
        self,
        transports: weakref.WeakSet[asyncio.BaseTransport],
        reader: asyncio.StreamReader,
        accepted: Callable[[asyncio.StreamReader, asyncio.StreamWriter], None],
    ) -> None:
        super().__init__(reader, accepted)
        self._transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)
        super().connection_made(transport)


async def _cancel(tasks: list[asyncio.Task[None]] | list[asyncio.Task[object]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _turns(count: int = 3) -> None:
    """Let the loop run what ``call_soon`` queued (transports open and close that way)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError, ssl.SSLError):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
