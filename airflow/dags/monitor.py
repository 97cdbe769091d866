"""Daily monitoring of the served model: live accuracy, confidence and drift of the last day.

Every day at 02:00 UTC, for the day that just ended (the run's data interval):

1. **report**: from the prediction logs of the window and the products sellers confirmed for
   them, compute top-1/top-k hit rates, the confidence distribution, the predicted-class
   drift against the training distribution (PSI) and the input drift (text length, share of
   requests with an image); store it in `monitoring_reports` (GET /monitoring/reports) with a
   flag per figure past its MONITOR_* threshold.
2. **retrain_needed**: when MONITOR_TRIGGER_RETRAIN is on and the report is flagged, go on to
3. **trigger_retrain**: start `rakuten_retrain` with its own interval (ending now).

Trigger it by hand with conf `{"window_start": ISO, "window_end": ISO}` to report on that
window instead of the run's data interval (benchmarks/learning_loop.py does).

The work lives in pipelines/monitor.py, imported inside the tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task

DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
}


def _settings():  # type: ignore[no-untyped-def]
    from config import Settings

    return Settings()


@dag(
    dag_id="rakuten_monitor",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime(2025, 1, 6, 2, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=2),
    tags=["rakuten", "mlops", "monitoring"],
    doc_md=__doc__,
)
def rakuten_monitor() -> None:
    @task
    def report() -> dict[str, Any]:
        """Build and store the monitoring report of the run's data interval."""
        from pipelines.monitor import monitor_window

        context = get_current_context()
        conf = context["dag_run"].conf or {}
        # A run triggered without a logical date (the CLI, the UI, the REST API) has no interval.
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if conf.get("window_start") and conf.get("window_end"):  # a window asked for by hand
            start = datetime.fromisoformat(str(conf["window_start"]))
            end = datetime.fromisoformat(str(conf["window_end"]))
        elif start is None or end is None:  # a manual run without a logical date: the last day
            end = context["dag_run"].run_after
            start = end - timedelta(days=1)
        return monitor_window(
            _settings(),
            datetime.fromtimestamp(start.timestamp(), UTC),
            datetime.fromtimestamp(end.timestamp(), UTC),
        )

    @task.short_circuit
    def retrain_needed(summary: dict[str, Any]) -> bool:
        """Go on to trigger a retraining only if flagged and MONITOR_TRIGGER_RETRAIN is on."""
        return bool(summary["flagged"]) and _settings().MONITOR_TRIGGER_RETRAIN

    trigger = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id="rakuten_retrain",
        conf={"interval_end": "{{ dag_run.run_after.isoformat() }}", "reason": "monitoring flags"},
        wait_for_completion=False,
        retries=0,
    )
    retrain_needed(report()) >> trigger


rakuten_monitor()
