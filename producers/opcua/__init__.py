"""OPC UA for SCADA: released schedules per tenant and pump, acknowledgements back
(``server.ScheduleServer``; users and isolation in ``access``; ``tagus serve opcua``)."""

from producers.opcua.server import NAMESPACE, ScheduleServer

__all__ = ["NAMESPACE", "ScheduleServer"]
