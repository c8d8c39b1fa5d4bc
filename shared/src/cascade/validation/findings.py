"""One anomaly found in one feature (or the dataset), before it becomes a TFMD proto."""

from __future__ import annotations

from dataclasses import dataclass, replace

from cascade.core.validation_config import Check, Severity

__all__ = ["Finding", "anomaly"]


@dataclass(frozen=True)
class Finding:
    """``feature`` is empty for dataset-level findings; ``anomaly_type`` is TFDV's enum."""

    feature: str
    check: Check
    anomaly_type: int
    short_description: str
    description: str
    severity: Severity = Severity.ERROR

    def graded(self, severity: Severity) -> Finding:
        return replace(self, severity=severity)

    def __str__(self) -> str:
        subject = f"feature {self.feature!r}" if self.feature else "dataset"
        return f"{subject}: {self.short_description}: {self.description}"


def anomaly(
    feature: str, check: Check, anomaly_type: int, short_description: str, description: str
) -> Finding:
    return Finding(feature, check, int(anomaly_type), short_description, description)
