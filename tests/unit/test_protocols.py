"""Fakes and real classes implement the same protocols.

mypy checks this module (see ``[tool.mypy] files`` in shared/pyproject.toml): the
functions under ``TYPE_CHECKING`` are never run, they make mypy check each real class and
each fake against its protocol. The hand-written fakes also declare their protocol
(``FakeDeployer(Deployer)``, ``FakeJobRunner(JobRunner)``) or check it where they are
defined (``tests/unit/validation/fake_storage.py``).

``google-cloud-storage`` has no type information (its classes are ``Any`` to mypy), so the
tests below check the real ``Client``, ``Bucket`` and ``Blob`` against the storage
protocols at run time: every member exists, and every call the protocol allows binds to
the real signature.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import pytest
from google.cloud import storage

from cascade.core.protocols import StorageBlob, StorageBucket, StorageClient

if TYPE_CHECKING:
    from cascade.core.bus import MessageBus
    from cascade.core.fakes import MemoryArtifactStore, RecordingBus
    from cascade.core.job_spec import JobRunner
    from cascade.core.store import ArtifactStore
    from cascade.deploy.deployer import Deployer
    from cascade.deploy.local_deployer import LocalDeployer
    from cascade.deploy.vertex_deployer import VertexDeployer
    from cascade.jobs.local_runner import LocalJobRunner
    from cascade.jobs.vertex_runner import VertexJobRunner
    from tests.unit.deploy.fakes import FakeDeployer
    from tests.unit.jobs.fakes import FakeJobRunner
    from tests.unit.validation.fake_storage import FakeBlob, FakeBucket, FakeStorageClient

    def _deployers(vertex: VertexDeployer, local: LocalDeployer, fake: FakeDeployer) -> None:
        _: list[Deployer] = [vertex, local, fake]

    def _job_runners(vertex: VertexJobRunner, local: LocalJobRunner, fake: FakeJobRunner) -> None:
        _: list[JobRunner] = [vertex, local, fake]

    def _storage(client: FakeStorageClient, bucket: FakeBucket, blob: FakeBlob) -> None:
        _client: StorageClient = client
        _bucket: StorageBucket = bucket
        _blob: StorageBlob = blob

    def _core_fakes(store: MemoryArtifactStore, bus: RecordingBus) -> None:
        _store: ArtifactStore = store
        _bus: MessageBus = bus


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _members(protocol: type) -> dict[str, Any]:
    """The protocol's public members: name -> function, property, or None (an attribute)."""
    members: dict[str, Any] = {}
    for klass in reversed(protocol.__mro__):
        if klass is object or not getattr(klass, "_is_protocol", False):
            continue
        members.update(dict.fromkeys(getattr(klass, "__annotations__", {})))
        members.update(
            {name: value for name, value in vars(klass).items() if not name.startswith("_")}
        )
    return members


def _signature_problems(
    name: str, protocol: inspect.Signature, real: inspect.Signature
) -> list[str]:
    """Why a call the protocol allows would not bind to the real signature."""
    wanted = list(protocol.parameters.values())[1:]
    offered = list(real.parameters.values())[1:]
    positional = [parameter for parameter in offered if parameter.kind in _POSITIONAL]
    problems: list[str] = []
    matched: dict[str, inspect.Parameter] = {}
    for index, parameter in enumerate(wanted):
        if parameter.kind in _POSITIONAL:
            if index >= len(positional):
                problems.append(f"{name}: no positional parameter #{index} ({parameter.name})")
                continue
            counterpart = positional[index]
            if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and (
                counterpart.name != parameter.name
            ):
                problems.append(f"{name}: parameter #{index} is {counterpart.name!r}")
        elif parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            found = real.parameters.get(parameter.name)
            if found is None and any(
                offer.kind is inspect.Parameter.VAR_KEYWORD for offer in offered
            ):
                # Binds through **kwargs (Blob.open's download options, raw_download):
                # what it does is the integration tests' to show.
                continue
            if found is None or found.kind not in _NAMED:
                problems.append(f"{name}: no keyword parameter {parameter.name!r}")
                continue
            counterpart = found
        else:
            problems.append(f"{name}: protocols here take no *args/**kwargs")
            continue
        matched[counterpart.name] = parameter
        if parameter.default is not inspect.Parameter.empty and (
            counterpart.default is inspect.Parameter.empty
        ):
            problems.append(f"{name}: {counterpart.name!r} is required, the protocol's is not")
    for parameter in offered:
        if parameter.kind in _VARIADIC or parameter.default is not inspect.Parameter.empty:
            continue
        given = matched.get(parameter.name)
        if given is None or given.default is not inspect.Parameter.empty:
            problems.append(f"{name}: requires {parameter.name!r}, which the protocol may omit")
    return problems


def _conformance_problems(protocol: type, real: type, instance: object) -> list[str]:
    problems: list[str] = []
    for name, member in _members(protocol).items():
        found = inspect.getattr_static(real, name, None)
        if inspect.isfunction(member):
            if not inspect.isfunction(found):
                problems.append(f"{name}: not a method of {real.__name__}")
                continue
            problems += _signature_problems(
                name, inspect.signature(member), inspect.signature(found)
            )
        elif isinstance(found, property):
            settable = member is None
            if settable and found.fset is None:
                problems.append(f"{name}: read-only on {real.__name__}, settable in the protocol")
        elif inspect.isfunction(found) or not hasattr(instance, name):
            problems.append(f"{name}: not an attribute of {real.__name__}")
    return problems


def _real_storage() -> tuple[storage.Client, storage.Bucket, storage.Blob]:
    client = storage.Client.create_anonymous_client()
    bucket = storage.Bucket(client, "bucket")
    return client, bucket, storage.Blob("name", bucket)


@pytest.mark.parametrize(
    ("protocol", "index"),
    [(StorageClient, 0), (StorageBucket, 1), (StorageBlob, 2)],
    ids=["client", "bucket", "blob"],
)
def test_the_real_storage_classes_implement_the_storage_protocols(
    protocol: type, index: int
) -> None:
    instance = _real_storage()[index]
    assert _conformance_problems(protocol, type(instance), instance) == []


def test_the_conformance_check_sees_a_drift() -> None:
    class Narrow:
        name = "n"

        def blob(self, other_name: str, generation: int) -> None: ...

        def get_blob(self) -> None: ...

    problems = _conformance_problems(StorageBucket, Narrow, Narrow())
    assert any(problem.startswith("blob: 'generation' is required") for problem in problems)
    assert any(problem.startswith("get_blob: no positional") for problem in problems)
    assert any(problem.startswith("copy_blob: not a method") for problem in problems)
    assert any(problem.startswith("client: not an attribute") for problem in problems)
