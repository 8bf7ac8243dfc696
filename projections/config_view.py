"""Projection: ``config.changed`` -> the current configuration view (KV ``tagus-config``).

Key ``<tenant>.<kind>`` holds the encoded ``config.changed`` of the current version (a
mapping's text also goes to ``tagus-mappings``, the intake's view).  A change is put only
if it is newer than what the view holds, so a replay from the start leaves the view
byte-identical and never shows an older version on the way.  The write path
(``ops/config_service.py``) updates the view at once too (read your writes); this
projection is what rebuilds it and keeps it right whatever the order.
"""

from __future__ import annotations

from collections.abc import Sequence

from bus.components import Projection
from bus.config_view import update_view
from contracts.config import ConfigChanged

NAME = "config-view"
ACCEPTS = (ConfigChanged,)


async def write(events: Sequence[ConfigChanged], js) -> None:
    for event in events:
        await update_view(js, event)


def projection() -> Projection:
    return Projection(name=NAME, accepts=ACCEPTS, write=write)
