"""Deviation: what the pumps did against the released schedule in force.

``handler`` (processor ``deviation``) turns a batch of normalised readings of pump-bound
sensors into ``schedule.deviated`` events; ``compare`` is the judgement itself (pure, per
pump and period); ``plan`` says which released schedule was in force when; ``adherence``
sums judgements into the figures a KPI reports.
"""

from processors.deviation.adherence import PumpAdherence, adherence
from processors.deviation.compare import PeriodCheck, check_periods
from processors.deviation.plan import in_force, period_at, schedule_end

__all__ = ["PeriodCheck", "PumpAdherence", "adherence", "check_periods", "in_force",
           "period_at", "schedule_end"]
