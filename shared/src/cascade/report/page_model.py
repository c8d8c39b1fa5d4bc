"""What a run report shows, section by section, once every artifact has been read.

``collect`` builds a ``RunReport``; ``render`` turns it into HTML. A section whose
artifacts do not exist carries ``missing`` (a sentence saying why) instead of content,
so a run rejected at validation still gets a report. Strings here come from data and
are escaped when rendered; numbers stay numbers until the template formats them.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from cascade.report.charts import SvgChart

__all__ = [
    "CheckView",
    "CoverageView",
    "DeploymentSection",
    "DistributionView",
    "DriftView",
    "EvaluationSection",
    "Fact",
    "FindingView",
    "InfraView",
    "MetricComparison",
    "MetricCurve",
    "ModeCostView",
    "RunReport",
    "RunSummary",
    "ServingEventView",
    "ServingPlanSection",
    "ShareRow",
    "StepView",
    "TrainingSection",
    "ValidationSection",
    "VersionView",
]


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fact(_View):
    """One labelled value of a key/value table."""

    label: str
    value: str


class StepView(_View):
    name: str
    state: str
    attempts: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    error: str | None = None
    outputs: list[Fact] = Field(default_factory=list)


class RunSummary(_View):
    state: str
    trigger: str
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    steps: list[StepView] = Field(default_factory=list)
    model_version: str | None = Field(None, description="The serving version this run made.")
    verdicts: list[Fact] = Field(default_factory=list)
    lineage: list[Fact] = Field(default_factory=list)


class FindingView(_View):
    """One anomaly; ``feature`` is empty for dataset-level anomalies."""

    feature: str
    severity: str
    short_description: str
    description: str


class DriftView(_View):
    feature: str
    measure: str
    value: float
    threshold: float
    exceeded: bool


class ShareRow(_View):
    """A bucket (numeric range) or a value (categorical) and its share on each side."""

    label: str
    baseline: float
    current: float


class DistributionView(_View):
    feature: str
    kind: str = Field(description="'numeric' (baseline quantile buckets) or 'categorical'.")
    drifted: bool
    rows: list[ShareRow]
    chart: SvgChart


class ValidationSection(_View):
    missing: str | None = None
    verdict: str = ""
    source: str = ""
    examples: int | None = None
    findings: list[FindingView] = Field(default_factory=list)
    drift: list[DriftView] = Field(default_factory=list)
    drift_chart: SvgChart | None = None
    distributions: list[DistributionView] = Field(default_factory=list)
    baseline_note: str = ""
    artifacts: list[Fact] = Field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for finding in self.findings if finding.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for finding in self.findings if finding.severity == "warning")

    @property
    def value_skews(self) -> int:
        """Findings of severity ``retrain``: accepted, and they retrain the model."""
        return sum(1 for finding in self.findings if finding.severity == "retrain")


class MetricCurve(_View):
    """One metric over the epochs: on the train split and (``val_``) on the eval split."""

    metric: str
    final_train: float | None = None
    final_validation: float | None = None
    chart: SvgChart


class TrainingSection(_View):
    missing: str | None = None
    job: list[Fact] = Field(default_factory=list)
    epochs_planned: int | None = None
    epochs_trained: int | None = None
    curves: list[MetricCurve] = Field(default_factory=list)
    history_note: str | None = None
    artifacts: list[Fact] = Field(default_factory=list)


class CheckView(_View):
    name: str
    kind: str
    tier: str
    verdict: str
    value: float | None = None
    baseline_value: float | None = None
    threshold: float | None = None
    detail: str = ""


class MetricComparison(_View):
    """An overall eval metric of the candidate and of the production (deployed) model."""

    metric: str
    candidate: float | None = None
    production: float | None = None

    @property
    def change(self) -> float | None:
        if self.candidate is None or self.production is None:
            return None
        return self.candidate - self.production


class InfraView(_View):
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    cases: list[Fact] = Field(default_factory=list)
    latency: list[Fact] = Field(default_factory=list)
    note: str | None = None


class EvaluationSection(_View):
    missing: str | None = None
    verdict: str = ""
    summary: str = ""
    first_run: bool = False
    first_run_policy: str = ""
    production_model_uri: str | None = None
    checks: list[CheckView] = Field(default_factory=list)
    comparison: list[MetricComparison] = Field(default_factory=list)
    comparison_note: str | None = None
    newest_files: list[str] = Field(default_factory=list)
    newest_comparison: list[MetricComparison] = Field(default_factory=list)
    newest_note: str | None = None
    infra: InfraView | None = None
    override: list[Fact] = Field(default_factory=list)
    artifacts: list[Fact] = Field(default_factory=list)


class VersionView(_View):
    version: str
    run_id: str
    state: str
    traffic: int
    deployed_at: datetime
    model_uri: str
    this_run: bool


class ServingEventView(_View):
    at: datetime
    action: str
    version: str
    detail: str
    this_run: bool


class DeploymentSection(_View):
    missing: str | None = None
    rollout: list[Fact] = Field(default_factory=list)
    rollout_note: str | None = None
    serving_missing: str | None = None
    target: str = ""
    endpoint: str = ""
    updated_at: datetime | None = None
    this_run_version: str | None = None
    versions: list[VersionView] = Field(default_factory=list)
    traffic_chart: SvgChart | None = None
    history: list[ServingEventView] = Field(default_factory=list)


class CoverageView(_View):
    """Peakedness: the top ``keys`` keys (``label``: top 10, top 1%…) take ``share``."""

    label: str
    keys: int
    share: float


class ModeCostView(_View):
    """One serving mode's expected cost for the logged traffic (estimates)."""

    mode: str
    recommended: bool
    precomputed_keys: int
    storage_bytes: int
    model_share: float
    model_calls_per_s: float | None = None
    cpu_cores: float | None = None
    mean_latency_ms: float
    p50_latency_ms: float


class ServingPlanSection(_View):
    """The dataset's newest stored serving plan (``models/<dataset>/serving-plan.json``).

    ``missing`` says how to get one when there is none; ``note`` why this report could
    not refresh it (shown above the stored plan, or above ``missing``).
    """

    missing: str | None = None
    note: str | None = None
    uri: str = ""
    mode: str = ""
    reason: str = ""
    serving_mode: str | None = Field(None, description="How the dataset is served now.")
    computed_at: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    source: list[Fact] = Field(
        default_factory=list, description="Dataset, endpoint, request log, key field."
    )
    requests: int = 0
    unkeyed: int = 0
    requests_per_s: float | None = None
    distinct_keys: int = 0
    cardinality: int = 0
    cardinality_source: str = ""
    head_keys: int = 0
    head_share: float = 0.0
    assumptions: str = ""
    peakedness: list[CoverageView] = Field(default_factory=list)
    costs: list[ModeCostView] = Field(default_factory=list)
    plot_svg: str = Field(
        "",
        description="The advisor's plot, rendered by render_svg from its autoescaped "
        "template (never a string read as is): the page embeds it unescaped.",
    )


class MonitoringRow(_View):
    """One monitored file of the dataset: the served model's value on it."""

    run_id: str
    at: datetime
    file: str
    model_version: str
    rows: int
    metric: str
    value: float | None = None
    reference: float | None = None
    verdict: str


class MonitoringSection(_View):
    """The served model scored on this run's file, and the dataset's recent points."""

    facts: list[Fact] = Field(default_factory=list)
    recent: list[MonitoringRow] = Field(default_factory=list)


class RunReport(_View):
    run_id: str
    dataset: str
    generated_at: datetime
    summary: RunSummary
    validation: ValidationSection
    training: TrainingSection
    evaluation: EvaluationSection
    deployment: DeploymentSection
    monitoring: MonitoringSection | None = None
    serving_plan: ServingPlanSection | None = None
