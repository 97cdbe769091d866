"""Prometheus metrics of one app instance (own registry, so tests can build many apps)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

    def track_log_writer(self, writer: LogWriter) -> None:
        self.log_queue_depth.set_function(lambda: writer.depth)
        self.log_write_failures.set_function(lambda: writer.failures)
        self.log_spilled.set_function(lambda: writer.spilled)
        self.log_spill_files.set_function(lambda: writer.backlog_files)

    def set_model_version(self, version: str | None) -> None:
        self.model_info.clear()
        if version:
            self.model_info.labels(version=version).set(1)
