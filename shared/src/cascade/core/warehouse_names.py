"""BigQuery names, checked: what a table id may be (no client needed to ask).

Apart from ``cascade.core.warehouse`` so that code which only names tables (the Vertex AI
batch request) does not import the BigQuery client.
"""

from __future__ import annotations

import re

__all__ = ["table_id"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,1023}")
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]|[a-z0-9.:-]{1,63}")


def table_id(project: str, dataset: str, table: str) -> str:
    """``project.dataset.table``, each part checked: names are data, never SQL."""
    if not _PROJECT.fullmatch(project):
        raise ValueError(f"not a valid project id: {project!r}")
    for kind, name in (("dataset", dataset), ("table", table)):
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"not a valid BigQuery {kind} name: {name!r} (letters, digits and _, "
                "not starting with a digit, at most 1024 characters)"
            )
    return f"{project}.{dataset}.{table}"
