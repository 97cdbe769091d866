"""Prometheus metrics of one app instance (own registry, so tests can build many apps)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from api.log_writer import LogWriter

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "api_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.request_latency = Histogram(
            "api_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "predictions_total",
            "Predictions by model kind and outcome",
            ["model_kind", "outcome"],
            registry=self.registry,
        )
        self.prediction_latency = Histogram(
            "prediction_duration_seconds",
            "Time spent in the model per prediction",
            ["model_kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predicted_class = Counter(
            "predicted_class_total", "Top-1 predicted prdtypecode", ["prdtypecode"], registry=self.registry
        )
        self.model_info = Gauge(
            "model_version_info", "The loaded model version (value 1)", ["version"], registry=self.registry
        )
        self.model_fallback = Gauge(
            "model_fallback",
            "1 while the loaded model is a startup fallback, not the production version",
            registry=self.registry,
        )
        self.model_reloads = Counter(
            "model_reloads_total", "Model reload attempts by result", ["result"], registry=self.registry
        )
        self.log_queue_depth = Gauge(
            "prediction_log_queue_depth", "Prediction logs waiting to be written", registry=self.registry
        )
        self.log_write_failures = Gauge(
            "prediction_log_write_failures", "Failed batch writes so far (retried)", registry=self.registry
        )

        self.log_dead_letters = Counter(
            "prediction_log_dead_letters",
            "Prediction logs the database refused, moved to the dead-letter file",
            registry=self.registry,
        )
        self.log_spilled = Gauge(
            "prediction_log_spilled",
            "Prediction logs spilled to disk by this process so far (queue full or shutdown)",
            registry=self.registry,
        )
        self.log_spill_files = Gauge(
            "prediction_log_spill_files",
            "Spill files waiting to be replayed into the database",
            registry=self.registry,
        )

        # The pipelines' state, read from the database at scrape time (deploy/alerts.yml).
        self.monitoring_flagged = Gauge(
            "monitoring_report_flagged",
            "1 when the latest monitoring report is flagged (NaN: no report or database down)",
            registry=self.registry,
        )
        self.monitoring_window_end = Gauge(
            "monitoring_report_window_end_timestamp_seconds",
            "End of the latest monitoring report's window, Unix time (NaN: none yet)",
            registry=self.registry,
        )
        self.rejected_versions = Gauge(
            "model_versions_rejected",
            "Model versions the gate (or promotion's verification) refused, ever",
            registry=self.registry,
        )

    def track_pipelines(self, session_factory: Any) -> None:
        """Gauges of the latest monitoring report and of the rejected versions, read when scraped."""
        from db import monitoring

        def read(figure: Callable[[Any], float]) -> Callable[[], float]:
            def value() -> float:
                try:
                    with session_factory() as session:
                        return figure(session)
                except Exception:  # the database being down is another alert's business
                    return math.nan

            return value

        def flagged(session: Any) -> float:
            row = monitoring.latest_report(session=session)
            return math.nan if row is None else float(row.flagged)

        def window_end(session: Any) -> float:
            row = monitoring.latest_report(session=session)
            if row is None:
                return math.nan
            end = row.window_end if row.window_end.tzinfo else row.window_end.replace(tzinfo=UTC)
            return end.timestamp()

        self.monitoring_flagged.set_function(read(flagged))
        self.monitoring_window_end.set_function(read(window_end))
        self.rejected_versions.set_function(
            read(lambda session: float(monitoring.rejected_versions(session=session)))
        )

    def track_log_writer(self, writer: LogWriter) -> None:
        self.log_queue_depth.set_function(lambda: writer.depth)
        self.log_write_failures.set_function(lambda: writer.failures)
        self.log_spilled.set_function(lambda: writer.spilled)
        self.log_spill_files.set_function(lambda: writer.backlog_files)

    def set_model_version(self, version: str | None) -> None:
        self.model_info.clear()
        if version:
            self.model_info.labels(version=version).set(1)
