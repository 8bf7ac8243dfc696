"""The scheduler (``tagus run scheduler``): every tenant's task schedules, each slot
requested exactly once across replicas, restarts and downtime.

- ``slots``: pure cron/DST arithmetic (slots of a cron in a zone, catch-up choices);
- ``clock``: the system clock and the fast/window/manual clocks of tests and benches;
- ``claims``: slot claims and cursors in JetStream KV;
- ``service``: the ``Scheduler`` itself.
"""

from producers.scheduler.claims import CURSORS_BUCKET, SLOTS_BUCKET
from producers.scheduler.clock import (
    FastClock, ManualClock, SystemClock, WindowClock, clock_from_spec,
)
from producers.scheduler.service import Scheduler, SchedulerOptions, SchedulerStats, task_id_for
from producers.scheduler.slots import (
    choose, due_slots, is_fixed_time, next_slot, slot_stamp, slots_between,
)

__all__ = [
    "CURSORS_BUCKET", "SLOTS_BUCKET", "FastClock", "ManualClock", "Scheduler",
    "SchedulerOptions", "SchedulerStats", "SystemClock", "WindowClock", "choose",
    "clock_from_spec", "due_slots", "is_fixed_time", "next_slot", "slot_stamp",
    "slots_between", "task_id_for",
]
