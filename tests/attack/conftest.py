"""The attack suite's local cloud, the per-attack checks and the table of outcomes.

One local cloud for the module (tests/attack/test_attacks.py), on free ports under a
sentinel folder (tests/attack/arena.py). Each attack gets an ``Attack`` to describe
itself and its outcome; when it ends, the checks every attack must leave true run
(nothing written outside the state folder, no reference run changed, no failed delivery,
the expected dead letters), and its row goes to the table printed at the end of the
session: input → outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.attack.arena import Arena, ModelExport
from tests.conftest import running_test_cloud

ROWS_KEY = pytest.StashKey[list[tuple[str, str, str, str, str]]]()
PASSED_KEY = pytest.StashKey[bool]()
COUNTERS_THAT_MUST_NOT_GROW = ("failed_attempts", "undeliverable", "dropped")


@dataclass
class Attack:
    """One hostile input: what it was, what came of it, and what it may cause."""

    name: str
    category: str = ""
    shows: str = ""
    outcome: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    """Router counters the attack must make grow (its deliveries) before the checks."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    """``<function>.dead_lettered`` counters the design says grow, and by how much."""
    markers: list[str] = field(default_factory=list)
    """Names that must appear nowhere outside the state folder (nor at /, nor in /tmp)."""
    new_runs: int = 0
    """Runs the attack must create (the design records one for each landed object)."""


def pytest_configure(config: pytest.Config) -> None:
    config.stash[ROWS_KEY] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[PASSED_KEY] = report.passed
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS_KEY, [])
    if not rows:
        return
    terminalreporter.section(f"attack outcomes ({len(rows)} attacks)")
    header = ("attack", "category", "input", "outcome", "checks")
    terminalreporter.write_line(
        f"{header[0]:<30} {header[1]:<14} {header[2]:<52} {header[4]:<6} {header[3]}"
    )
    for name, category, shows, outcome, verdict in rows:
        terminalreporter.write_line(
            f"{name[:30]:<30} {category:<14} {_clip(shows, 52):<52} {verdict:<6} "
            f"{_clip(outcome, 150)}"
        )
    categories = Counter(category.split("→")[0] for _, category, _, _, _ in rows)
    failed = sum(verdict != "ok" for *_, verdict in rows)
    terminalreporter.write_line(
        ", ".join(f"{name}: {count}" for name, count in sorted(categories.items()))
        + f"; checks failed: {failed}"
    )


def _clip(text: str, width: int) -> str:
    flat = " ".join(repr(text)[1:-1].split()) if not text.isprintable() else text
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    sentinel = tmp_path_factory.mktemp("attack")
    (sentinel / "cloud").mkdir()
    export = ModelExport(tmp_path_factory.mktemp("attack-model") / "tiny")
    try:
        with running_test_cloud(sentinel / "cloud", model_server_workers=1) as cloud:
            yield Arena.prepare(cloud, sentinel, export)
    finally:
        export.stop()


@pytest.fixture(scope="module")
def served_model(arena: Arena) -> str:
    """The dataset the model server serves (deployed before any attack's snapshot)."""
    return arena.serve_model()


@pytest.fixture
def attack(arena: Arena, request: pytest.FixtureRequest) -> Iterator[Attack]:
    """The attack under way; after it, the checks that hold for every attack."""
    before = arena.snapshot()
    current = Attack(name=request.node.callspec.id if hasattr(request.node, "callspec") else "")
    yield current
    problems: list[str] = []
    try:
        arena.wait_for_counts(before.stats, current.counts)
        problems = _problems(arena, before, current)
    except AssertionError as error:
        problems = [str(error)]
    finally:
        passed = request.node.stash.get(PASSED_KEY, False)
        verdict = "ok" if passed and not problems else "FAILED"
        outcome = current.outcome or "(no outcome: the attack's test failed first)"
        request.config.stash[ROWS_KEY].append(
            (current.name, current.category, current.shows, outcome, verdict)
        )
    assert not problems, "\n".join(problems)


def _problems(arena: Arena, before: Any, current: Attack) -> list[str]:
    after = arena.snapshot()
    problems = []
    written = sorted(set(after.outside.items()) - set(before.outside.items()))
    if written:
        problems.append(f"written outside the state folder: {written}")
    created = sorted(after.runs - before.runs)
    if len(created) != current.new_runs:
        problems.append(f"{len(created)} runs created, expected {current.new_runs}: {created}")
    for run_id, objects in before.references.items():
        if after.references[run_id] != objects:
            problems.append(f"reference run {run_id} changed: {objects} -> {after.references}")
    for key, value in after.stats.items():
        grew = value - before.stats.get(key, 0)
        kind = key.rsplit(".", 1)[-1]
        if kind in COUNTERS_THAT_MUST_NOT_GROW and grew:
            problems.append(f"router counter {key} grew by {grew}")
        if kind == "dead_lettered" and grew != current.dead_letters.get(key, 0):
            problems.append(f"{key} grew by {grew}, expected {current.dead_letters.get(key, 0)}")
    state = arena.cloud.local.state_dir
    for marker in current.markers:
        # where a '../' name would land: any folder above the state folder, or below
        # the session's temporary folder
        found = [top / marker for top in state.parents if (top / marker).exists()]
        found += [p for p in arena.sentinel.parent.rglob(marker) if state not in p.parents]
        if found:
            problems.append(f"{marker!r} written outside the state folder: {found}")
    return problems
