"""Each integration file starts from a healthy shared cloud, whatever ran before it.

The files share one local cloud (``local_cloud``, session-scoped). A file that left it
recovering (a process restarting, a stream reconnecting) or busy (retries, a training
job) must not decide whether the next file passes: before each file that uses it, wait
until every supervised process is up and answering and the router is idle.
"""

from __future__ import annotations

import pytest

from tests.conftest import LocalCloud


def _module_uses_local_cloud(request: pytest.FixtureRequest) -> bool:
    return any(
        isinstance(item, pytest.Function)
        and item.getparent(pytest.Module) is request.node
        and "local_cloud" in item.fixturenames
        for item in request.session.items
    )


@pytest.fixture(scope="module", autouse=True)
def _healthy_shared_cloud(request: pytest.FixtureRequest) -> None:
    if not _module_uses_local_cloud(request):
        return  # a file with its own private cloud does not start the shared one
    cloud: LocalCloud = request.getfixturevalue("local_cloud")
    cloud.wait_healthy()
