"""Write a known-good encoded sample of every event type and version that lacks one.

    python -m tests.samples.make_samples

Existing samples are never rewritten: they are what old producers put on the wire, and
``tests/unit/test_samples.py`` proves the current contracts still read them.  Add the
sample of a new event (or a new version) by adding it to ``SAMPLES`` and running this.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from contracts.alerts import (
    AlertAcknowledged, AlertCleared, AlertDigestDue, AlertNotificationFailed, AlertPending,
    AlertRaised,
)
from contracts.base import Event, event_type
from contracts.config import ConfigChanged
from contracts.forecasts import ForecastIssued, ForecastModelTrained
from contracts.kpis import Kpi, KpiComputed
from contracts.schedules import (
    PumpPlan, ScheduleAcknowledged, ScheduleApproved, ScheduleDeviated, ScheduleProposed,
    ScheduleReleased,
)
from contracts.simulations import (
    Calibration, PumpFit, PumpRun, SimulationCompleted, SimulationScenario, TankFit, TankRun,
)
from contracts.weather import WeatherForecastReceived, WeatherSeries
from contracts.tasks import (
    TaskCancelled, TaskCancelRequested, TaskCompleted, TaskFailed, TaskProgressed,
    TaskRequested, TaskStarted,
)
from contracts.deadletters import MessageDeadLettered
from contracts.intake import IntakeFailed, IntakeParsed, RawIntakeReceived
from contracts.readings import (
    ReadingsNormalised, ReadingsRejected, ReadingsReported, RejectedReading, Series,
)
from contracts.registry import encode

HERE = Path(__file__).parent
T = datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
ENV = dict(tenant="ltown", occurred_at=T, recorded_at=T, correlation_id="c-1")

SAMPLES: list[Event] = [
    RawIntakeReceived(event_id="raw-1", source="file", filename="2019-01_SCADA_Flows.csv",
                      bucket="tagus-intake", object_name="ltown/ab12", sha256="ab12" * 16,
                      size_bytes=123456, content_type="text/csv", mapping_id="battledim-flows",
                      mapping_version="cd34" * 16, **ENV),
    IntakeParsed(event_id="parsed-1", causation_id="raw-1", intake_id="raw-1",
                 mapping_version="cd34" * 16, rows_received=10, rows_accepted=9,
                 rows_rejected=1, values_received=30, values_accepted=26, values_rejected=1,
                 values_missing=3, reasons={"missing": 3, "unparseable_time": 1},
                 sensors=["p227", "p235", "PUMP_1"], first_ts_ns=1546300800000000000,
                 last_ts_ns=1546303500000000000, **ENV),
    IntakeFailed(event_id="failed-1", causation_id="raw-2", intake_id="raw-2",
                 reason="empty_file", detail="the file has no bytes", **ENV),
    ReadingsReported(event_id="rep-1", source="json-push", series=[
        Series(sensor_id="p227", unit="m3/h", timestamps_ns=[1546300800000000000],
               values=[83.93])], **ENV),
    ReadingsNormalised(event_id="norm-1", causation_id="rep-1", source="json-push", series=[
        Series(sensor_id="p227", unit="m3/s", timestamps_ns=[1546300800000000000],
               values=[0.023313888888888887], quality=[0])], **ENV),
    ReadingsRejected(event_id="rej-1", causation_id="rep-1", source="file", rejected=[
        RejectedReading(row=12, sensor_id="p227", raw="8,3,9", reason="non_numeric",
                        detail="'8,3,9' is not a number"),
        RejectedReading(row=40, sensor_id="T1", raw="#N/A", reason="missing", count=12)],
        **ENV),
    MessageDeadLettered(event_id="dl-1", stream="READINGS", consumer="normalise-units",
                        stream_seq=42, subject="tagus.readings.ltown.reported",
                        payload=b"\xc1garbage", headers={"Nats-Msg-Id": "x"},
                        error_kind="malformed", reason="not a readings event", deliveries=1,
                        **ENV),
    ConfigChanged(event_id="cfg-1", kind="tariff", version=2, sha256="ef56" * 16,
                  document={"currency": "EUR", "kind": "time_of_use", "periods": [
                      {"name": "night", "price": "0.08 EUR/kWh", "days": ["mon"],
                       "start": "00:00", "end": "24:00"}]},
                  author="ana", reason="2025 contract", **ENV),
    TaskRequested(event_id="task-1", kind="data.completeness", params={"day": "2024-10-26"},
                  slot=T, schedule="daily-kpis", requested_by="scheduler",
                  config_versions={"assets": 3}, time_limit_s=600.0, **ENV),
    TaskStarted(event_id="ts-1", causation_id="task-1", task_id="task-1",
                kind="data.completeness", worker="host:1:worker-kpi", attempt=1,
                queued_s=0.4, **ENV),
    TaskProgressed(event_id="tp-1", causation_id="task-1", task_id="task-1",
                   kind="data.completeness", fraction=0.5, message="20 of 40 sensors", **ENV),
    TaskCompleted(event_id="tc-1", causation_id="task-1", task_id="task-1",
                  kind="data.completeness", outputs=["kpi-1"], duration_s=1.5, **ENV),
    TaskFailed(event_id="tf-1", causation_id="task-2", task_id="task-2", kind="optimise",
               reason="timed out", detail="exceeded its time limit of 300 s", retryable=True,
               attempt=1, **ENV),
    TaskCancelled(event_id="tx-1", causation_id="task-3", task_id="task-3", kind="optimise",
                  by="ana", reason="tank 2 out of service", while_running=True, **ENV),
    TaskCancelRequested(event_id="tcr-1", causation_id="task-3", task_id="task-3",
                        kind="optimise", by="ana", reason="tank 2 out of service", **ENV),
    KpiComputed(event_id="kpi-1", causation_id="task-1", day="2024-10-26", task_id="task-1",
                kpis=[Kpi(name="completeness", subject="p227", value=0.99, unit="1",
                          detail="285 of 288 expected (every 300 s)")], **ENV),
    ForecastModelTrained(event_id="fm-1", causation_id="task-4", task_id="task-4",
                         series="zone:dma_a", unit="m3/s", model_sha256="ab" * 32,
                         object_name="ltown/" + "ab" * 32, chosen="gbm",
                         metrics={"gbm": {"PI1": 0.0011, "PI2": 0.003, "PI3": 0.0014},
                                  "seasonal_naive": {"PI1": 0.0016, "PI2": 0.004,
                                                     "PI3": 0.0019}},
                         origin=T, backtest_origins=[T], features=["hour", "dow"],
                         excluded=[{"start": "2021-03-01T00:00:00+00:00",
                                    "end": "2021-03-22T00:00:00+00:00", "reason": "missing"}],
                         library_versions={"lightgbm": "4.7.0"}, training_s=12.5, **ENV),
    ForecastIssued(event_id="fi-1", causation_id="task-5", task_id="task-5",
                   series="zone:dma_a", unit="m3/s", issued_at=T, valid_from=T,
                   quantiles={"p10": [0.009, 0.008], "p50": [0.010, 0.009],
                              "p90": [0.011, 0.010]}, method="gbm",
                   model_sha256="ab" * 32, inputs={"data_sha256": "cd" * 32}, **ENV),
    WeatherForecastReceived(event_id="wf-1", source="poller:open-meteo", location="station",
                            latitude=45.0, longitude=12.0, issued_at=T,
                            valid_times_ns=[1729989000000000000],
                            series=[WeatherSeries(variable="air_temp", unit="degC",
                                                  values=[14.2])], **ENV),
    AlertPending(event_id="ap-1", causation_id="norm-1", alert_id="alert-1", rule="p-high",
                 kind="threshold", subject="p227", as_of=T, since=T, severity="critical",
                 message="p227 at 612000 Pa, above the limit 6 bar", value=612000.0, **ENV),
    AlertRaised(event_id="ar-1", causation_id="norm-2", alert_id="alert-1", rule="p-high",
                kind="threshold", subject="p227", as_of=T, since=T, severity="critical",
                message="p227 at 615000 Pa, above the limit 6 bar", value=615000.0,
                limit=600000.0, unit="Pa", detail={"direction": "above", "clear_at": 580000.0},
                **ENV),
    AlertCleared(event_id="ac-1", causation_id="norm-3", alert_id="alert-1", rule="p-high",
                 kind="threshold", subject="p227", as_of=T, severity="critical",
                 message="p227 back at 570000 Pa (clears at 580000 Pa)", value=570000.0, **ENV),
    AlertAcknowledged(event_id="ak-1", causation_id="alert-1", alert_id="alert-1",
                      rule="p-high", kind="threshold", subject="p227", as_of=T, by="ana",
                      comment="crew on site", **ENV),
    AlertDigestDue(event_id="ad-1", causation_id="task-1", window_start=T, window_end=T,
                   as_of=T, **ENV),
    AlertNotificationFailed(event_id="anf-1", causation_id="ar-1", notice_id="ar-1",
                            channel="webhook:ops", outcome="refused",
                            reason="HTTP 404 Not Found", alert_id="alert-1", **ENV),
    ScheduleProposed(event_id="sp-1", causation_id="task-6", task_id="task-6", start=T,
                     period_s=3600, pumps=[PumpPlan(pump="PUMP_1", speeds=[1.0, 0.0],
                                                    reasons=["cheap period",
                                                             "tank T1 near its upper bound"])],
                     tanks={"T1": [3.5, 3.7, 3.6]}, tank_bounds={"T1": [0.5, 3.9]},
                     energy_kwh=41.0, cost=4.1, baseline_energy_kwh=44.0, baseline_cost=7.5,
                     saving=3.4, verified=True, status="optimal", solver={"gap": 0.001},
                     inputs={"forecast": "fi-1"}, **ENV),
    ScheduleApproved(event_id="sa-1", schedule_id="sp-1", by="ana", **ENV),
    ScheduleReleased(event_id="sr-1", schedule_id="sp-1", version=7, start=T, period_s=3600,
                     pumps=[PumpPlan(pump="PUMP_1", speeds=[1.0, 0.0])], released_by="ana",
                     proposed_event_id="sp-1", **ENV),
    ScheduleAcknowledged(event_id="sk-1", schedule_id="sp-1", version=7, channel="opcua",
                         by="ltown/scada", **ENV),
    ScheduleDeviated(event_id="sd-1", schedule_id="sp-1", pump="PUMP_1", period_start=T,
                     expected=1.0, observed=0.0, sensor="PUMP_1",
                     detail="pump PUMP_1 should have been on and was off", **ENV),
    SimulationCompleted(
        event_id="sim-1", causation_id="task-9", task_id="task-9", start=T, period_s=3600,
        periods=2,
        scenario=SimulationScenario(demand="forecast",
                                    demand_sources={"town": "forecast zone:town issued "
                                                            "2024-10-26T22:00:00+00:00"},
                                    schedule="own controls", out_of_service=["PUMP_2"],
                                    demand_multiplier=1.1, initial_levels_m={"T1": 3.3},
                                    initial_level_sources={"T1": "T1 at 00:25Z + 0.00 m"}),
        tanks=[TankRun(tank="T1", levels_m=[3.3, 3.1, 3.4], min_m=3.05, max_m=3.4,
                       lower_m=0.0, upper_m=6.5)],
        pumps=[PumpRun(pump="PUMP_1", status=[0.0, 1.0], speed=[None, None],
                       flow_m3s=[0.0, 0.08], head_m=[None, 61.2], power_kw=[0.0, 68.0],
                       energy_kwh=[0.0, 68.0], cost=[0.0, 6.8])],
        min_pressure_m={"town": [22.4, 19.8]}, energy_kwh=68.0, cost=6.8, currency="EUR",
        warnings=["tank T1 full (at its maximum level) for part of the horizon"],
        calibration=Calibration(
            days=3, windows=[T], tanks=[TankFit(tank="T1", sensor="T1", points=864,
                                                rmse_m=0.12, bias_m=-0.03, max_abs_m=0.41,
                                                rmse_per_day_m=[0.1, 0.12, None])],
            pumps=[PumpFit(pump="PUMP_1", sensor="PUMP_1", points=860, rmse_m3s=0.004,
                           bias_m3s=0.001, rmse_pct=5.2),
                   PumpFit(pump="PUMP_2", reason="no pump_flow sensor bound to PUMP_2")]),
        inputs={"config_versions": {"network": 1}, "prices_per_kwh": [0.1, 0.1]}, **ENV),
]


def sample_path(event: Event) -> Path:
    return HERE / f"{event_type(event)}.v{event.schema}.msgpack"


def main() -> None:
    for event in SAMPLES:
        path = sample_path(event)
        if not path.exists():
            path.write_bytes(encode(event))
            print(f"wrote {path.name}")


if __name__ == "__main__":
    main()
