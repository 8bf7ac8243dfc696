"""Moved to ``projections.api.queries``.  This alias stays only until ``ops/dev/plots.py``
imports the new path; nothing else should use it."""

from projections.api.queries import latest, list_sensors, range_query, readings  # noqa: F401
