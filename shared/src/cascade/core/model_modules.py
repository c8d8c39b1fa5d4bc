"""The user's model module (``training.model: custom``): storing it and pinning it.

A module is one UTF-8 Python file of at most 1 MiB in the artifacts bucket, at
``datasets/<dataset>/<name>`` (``training.model_module``, e.g. ``models/churn.py``;
``DatasetPaths.model_module``). ``cascade model-module push`` stores it
(``push_model_module``). The train step pins it when it builds a run's job spec
(``pin_model_module``): the generation it read and the SHA-256 of those very bytes go
into ``TrainingJobSpec.model_module``, so the trainer runs exactly the code the run's
lineage names, however often the object is overwritten afterwards. A local experiment
(``cascade train --local --model-module FILE``) stores its file under a name made of
its hash (``stage_experiment_module``), so the same file is stored once.

Nothing here imports or runs the module: user code runs only inside the training job.
"""

from __future__ import annotations

import ast
import hashlib

from cascade.core.errors import BadInputError, ConcurrentUpdateError
from cascade.core.job_spec import ModelModule
from cascade.core.paths import DatasetPaths
from cascade.core.store import ArtifactStore

__all__ = [
    "EXPERIMENT_MODULE_FOLDER",
    "MAX_MODULE_BYTES",
    "MODULE_CONTENT_TYPE",
    "experiment_module_name",
    "module_problem",
    "pin_model_module",
    "pinned_uri",
    "push_model_module",
    "source_problem",
    "stage_experiment_module",
]

MAX_MODULE_BYTES = 1024 * 1024
"""The largest module accepted (1 MiB): model code, not data or weights."""

MODULE_CONTENT_TYPE = "text/x-python"
EXPERIMENT_MODULE_FOLDER = "models/experiments"
"""Where ``cascade train --local --model-module FILE`` stores its file (by hash)."""

_PIN_ATTEMPTS = 5


def module_problem(data: bytes) -> str | None:
    """Why ``data`` cannot be a model module (too large, not UTF-8 text), or None."""
    if len(data) > MAX_MODULE_BYTES:
        return f"is {len(data)} bytes; a model module is at most {MAX_MODULE_BYTES} bytes (1 MiB)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"is not UTF-8 text (invalid byte at offset {error.start}): not Python source"
    if "\x00" in text:
        return "contains NUL characters: not Python source"
    return None


def source_problem(data: bytes) -> str | None:
    """``module_problem``, then whether the text parses as Python (parsed, never run)."""
    problem = module_problem(data)
    if problem is not None:
        return problem
    try:
        ast.parse(data.decode("utf-8"), filename="<model module>")
    except SyntaxError as error:
        return f"is not valid Python: line {error.lineno}: {error.msg}"
    except (ValueError, RecursionError, MemoryError) as error:
        return f"is not valid Python: {type(error).__name__}"
    return None


def pinned_uri(module: ModelModule) -> str:
    """``gs://bucket/name#generation``: how a run's outputs and lineage name its module."""
    return f"{module.uri}#{module.generation}"


def _pinned(store: ArtifactStore, object_name: str, data: bytes, generation: int) -> ModelModule:
    return ModelModule(
        uri=store.uri(object_name),
        generation=generation,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def pin_model_module(store: ArtifactStore, dataset: str, name: str) -> ModelModule:
    """The module ``name`` of ``dataset`` as it is now: its generation and the SHA-256 of
    the bytes of that generation (one read, pinned to the generation just seen).

    BadInputError naming the object when it does not exist, is larger than 1 MiB or is
    not UTF-8 text: the run cannot train, and retrying would not change that.
    """
    object_name = DatasetPaths(dataset).model_module(name)
    uri = store.uri(object_name)
    for _ in range(_PIN_ATTEMPTS):
        info = store.stat(object_name)
        if info is None:
            raise BadInputError(
                f"model module {name} (training.model_module of {dataset}) does not exist: "
                f"store it with `cascade model-module push {dataset} FILE --name {name}`",
                uri=uri,
            )
        if info.size > MAX_MODULE_BYTES:
            raise BadInputError(
                f"model module {name} is {info.size} bytes; at most {MAX_MODULE_BYTES} (1 MiB)",
                uri=uri,
            )
        stored = store.read(object_name, generation=info.generation)
        if stored is None:
            continue  # replaced between the two requests: pin the newer one
        problem = module_problem(stored.data)
        if problem is not None:
            raise BadInputError(f"model module {name} {problem}", uri=f"{uri}#{info.generation}")
        return _pinned(store, object_name, stored.data, stored.generation)
    raise ConcurrentUpdateError(f"{uri} kept changing while being pinned")


def push_model_module(store: ArtifactStore, dataset: str, name: str, data: bytes) -> ModelModule:
    """Check ``data`` (UTF-8 Python of at most 1 MiB) and store it as ``dataset``'s module
    ``name``; returns the module as a run submitted now would pin it.

    BadRequestError for an invalid name, BadInputError for content that is not a module.
    """
    object_name = DatasetPaths(dataset).model_module(name)
    problem = source_problem(data)
    if problem is not None:
        raise BadInputError(f"model module {problem}", uri=store.uri(object_name))
    generation = store.write(object_name, data, content_type=MODULE_CONTENT_TYPE)
    if not generation:
        raise ConcurrentUpdateError(f"{store.uri(object_name)}: the write reported no generation")
    return _pinned(store, object_name, data, generation)


def experiment_module_name(data: bytes) -> str:
    """``models/experiments/<sha256[:16]>.py``: the object name of a file by its content."""
    return f"{EXPERIMENT_MODULE_FOLDER}/{hashlib.sha256(data).hexdigest()[:16]}.py"


def stage_experiment_module(store: ArtifactStore, dataset: str, data: bytes) -> ModelModule:
    """Store ``data`` under its content's name (``experiment_module_name``) unless that
    object already holds these very bytes, and pin it. An object of that name with other
    bytes (a prefix collision, or edited by hand) is replaced."""
    name = experiment_module_name(data)
    object_name = DatasetPaths(dataset).model_module(name)
    problem = source_problem(data)
    if problem is not None:
        raise BadInputError(f"model module {problem}", uri=store.uri(object_name))
    for _ in range(_PIN_ATTEMPTS):
        info = store.stat(object_name)
        if info is not None and info.size == len(data):
            stored = store.read(object_name, generation=info.generation)
            if stored is not None and stored.data == data:
                return _pinned(store, object_name, data, stored.generation)
        generation = store.write(
            object_name,
            data,
            content_type=MODULE_CONTENT_TYPE,
            if_generation_match=0 if info is None else info.generation,
        )
        if generation:
            return _pinned(store, object_name, data, generation)
    raise ConcurrentUpdateError(f"{store.uri(object_name)} kept changing while being stored")
