"""A realistic synthetic tabular dataset for demos, tests and benchmarks.

Credit-default style rows: numeric and categorical features with a label that depends
on them (so a model has something to learn), reproducible from a seed. ``drift=True``
is the same population some months later, drifted well past the default validation
thresholds: older, richer customers with lower credit scores (shifted age, income and
credit_score), a different employment mix (45% unemployed, not 25%) and unseen regions.
"""

from __future__ import annotations

import csv
import io
import math
import random

__all__ = ["COLUMNS", "SAMPLE_PIPELINE_CONFIG", "sample_csv", "sample_instance"]

COLUMNS = (
    "customer_id",
    "age",
    "income",
    "loan_amount",
    "term_months",
    "credit_score",
    "employment",
    "home_ownership",
    "purpose",
    "region",
    "num_late_payments",
    "defaulted",
)
SAMPLE_PIPELINE_CONFIG = """\
# Pipeline config of the sample credit dataset (datasets/credit/pipeline.yaml).
label: defaulted
problem_type: binary
transform:
  key_column: customer_id   # split by customer, and pass the id through at serving
  exclude: [customer_id]
  bucketize: {age: [25, 35, 50, 65]}
training:
  model: boosted_trees      # the default; network | auto | custom (docs/trainer.md)
  slice_features: [region, employment]
"""

_EMPLOYMENT = ("salaried", "self_employed", "unemployed", "retired")
_HOME = ("rent", "mortgage", "own")
_PURPOSE = ("car", "education", "home_improvement", "debt_consolidation", "other")
_REGION = ("north", "south", "east", "west")
_DRIFTED_EMPLOYMENT_WEIGHTS = (0.3, 0.15, 0.45, 0.1)  # uniform before: 0.25 each


def _employment(rng: random.Random, drift: bool) -> str:
    if drift:
        return rng.choices(_EMPLOYMENT, weights=_DRIFTED_EMPLOYMENT_WEIGHTS)[0]
    return rng.choice(_EMPLOYMENT)


def _row(rng: random.Random, index: int, drift: bool, unseen: bool) -> list[object]:
    age = min(max(int(rng.gauss(45 if drift else 40, 12)), 18), 90)
    income = round(math.exp(rng.gauss(11.4 if drift else 10.8, 0.5)), 2)
    loan = round(rng.uniform(1_000, 60_000), 2)
    score = min(max(int(rng.gauss(590 if drift else 660, 70)), 300), 850)
    late = min(int(rng.expovariate(1.2)), 12)
    region = rng.choice((*_REGION, "overseas", "unknown") if unseen else _REGION)
    risk = -3.0 + 0.00004 * loan - 0.000004 * income - 0.01 * (score - 660) + 0.45 * late
    defaulted = int(rng.random() < 1 / (1 + math.exp(-risk)))
    return [
        f"c{index:08d}",
        age,
        income,
        loan,
        rng.choice((12, 24, 36, 60)),
        score,
        _employment(rng, drift),
        rng.choice(_HOME),
        rng.choice(_PURPOSE),
        region,
        late,
        defaulted,
    ]


def sample_csv(
    rows: int, *, seed: int = 7, drift: bool = False, unseen_regions: bool | None = None
) -> bytes:
    """``rows`` rows of CSV with a header line. ``drift``: a population that moved (older,
    richer, lower scores, another employment mix, more defaults), a value skew; with it,
    by default, regions nobody has seen (``overseas``, ``unknown``), a schema skew
    (``unseen_regions=False``: the moved world alone)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not secrets
    unseen = drift if unseen_regions is None else unseen_regions
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for index in range(rows):
        writer.writerow(_row(rng, index, drift, unseen))
    return buffer.getvalue().encode()


_NUMERIC_COLUMNS = (
    "age",
    "income",
    "loan_amount",
    "term_months",
    "credit_score",
    "num_late_payments",
)


def sample_instance(seed: int = 99) -> dict[str, object]:
    """One sample row as a prediction request's instance: no label, numbers as floats."""
    header, first_row = sample_csv(1, seed=seed).decode().splitlines()[:2]
    instance: dict[str, object] = dict(zip(header.split(","), first_row.split(","), strict=True))
    instance.pop("defaulted")
    for column in _NUMERIC_COLUMNS:
        instance[column] = float(str(instance[column]))
    return instance
