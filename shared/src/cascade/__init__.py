"""Cascade: an event-driven continuous-training pipeline for Google Cloud.

The package holds all logic; ``functions/<step>/main.py`` are thin adapters over
``cascade.steps.adapter`` and ``cascade.steps``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
