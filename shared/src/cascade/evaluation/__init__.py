"""Evaluation: the candidate's metrics and load-and-probe result judged against the
dataset's thresholds (``policy``), recorded in ``runs/<run_id>/evaluation.json``
(``record``), and the audited manual override (``override``).
"""
