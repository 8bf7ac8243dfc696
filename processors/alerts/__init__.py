"""Alerts: a tenant's rules judged on its events and on the clock (pure).

``handler`` (the processors ``alerts-*`` per stream, and task ``alerts.evaluate``),
``machine`` (one alert per rule and subject: pending, raised, cleared), ``readings``
(thresholds, rates of change), ``discrete`` (uploads, tasks, schedules, tank
predictions), ``periodic`` (stale sensors, forecast deviation, dead letters, digests).
"""
