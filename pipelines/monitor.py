"""Live quality of the served model, from the prediction logs of one window (the monitoring DAG).

For the window [start, end) the report holds:

- traffic: requests per outcome, model kind and model version;
- live accuracy: among the answered requests that a seller later confirmed (a product saved
  with the request's id, not quarantined), the share whose confirmed category was the top-1
  answer (`top1_hit_rate`) and among the top k (`topk_hit_rate`);
- live suggestion-set coverage (`set_coverage`): among the confirmed requests, the share whose
  confirmed category was in the suggestion set the seller was shown, the live check of the
  calibration promise (95%): flagged when it falls below the promise by more than its sampling
  error (`coverage_z` binomial standard errors of the promise at that many confirmations);
- confidence: mean, median and a 10-bin histogram of the top-1 probability;
- prediction drift: the PSI between the predicted-class distribution and the training class
  distribution (the production bundle's own record of it when its metadata has one, else the
  usable rows of the products table);
- input drift: text length (PSI over fixed bins, and the mean) and the share of requests with
  an image, against the products table (what the models trained on), with the previous window
  alongside for the trend.

A figure past its threshold adds a flag (`{"code", "value", "threshold", "detail"}`); drift
is not judged below `min_requests` answered requests, hit rates not below `min_confirmed`
confirmed ones (the report says so instead). PSI = sum((a - e) * ln(a / e)) over bins, each
share floored at 1e-4 so that an empty bin does not make it infinite; the usual reading is
< 0.1 stable, 0.1-0.2 moderate, > 0.2 a shift worth acting on.

The computations are plain functions of plain values (tested on seeded logs); the queries are
`db.monitoring`'s: they read the window and store one report per window (a rerun replaces it).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from db import monitoring
from db.monitoring import LogRow
from db.tables import MonitoringReport

logger = logging.getLogger(__name__)

PSI_EPSILON = 1e-4
CONFIDENCE_BINS = 10
# Upper bounds (exclusive) of the text-length bins, in characters of cleaned text.
TEXT_LENGTH_EDGES = (1, 50, 100, 200, 500, 1000, 2000)
# Keys a bundle's metadata.json may record its training class counts under.
CLASS_COUNT_KEYS = ("train_class_distribution", "class_counts", "label_counts")


@dataclass(frozen=True)
class Thresholds:
    """When a figure is flagged (from the MONITOR_* settings)."""

    top_k: int = 5
    min_requests: int = 50
    min_confirmed: int = 20
    min_top1_hit_rate: float = 0.60
    min_topk_hit_rate: float = 0.85
    min_mean_confidence: float = 0.40
    max_class_psi: float = 0.20
    max_input_psi: float = 0.20
    max_image_share_delta: float = 0.15
    set_coverage: float = 0.95  # what the suggestion sets promise
    coverage_z: float = 2.0  # how many standard errors below the promise is a flag

    @classmethod
    def from_settings(cls, settings: Any) -> Thresholds:
        return cls(
            top_k=settings.MONITOR_TOP_K,
            min_requests=settings.MONITOR_MIN_REQUESTS,
            min_confirmed=settings.MONITOR_MIN_CONFIRMED,
            min_top1_hit_rate=settings.MONITOR_MIN_TOP1_HIT_RATE,
            min_topk_hit_rate=settings.MONITOR_MIN_TOPK_HIT_RATE,
            min_mean_confidence=settings.MONITOR_MIN_MEAN_CONFIDENCE,
            max_class_psi=settings.MONITOR_MAX_CLASS_PSI,
            max_input_psi=settings.MONITOR_MAX_INPUT_PSI,
            max_image_share_delta=settings.MONITOR_MAX_IMAGE_SHARE_DELTA,
            set_coverage=settings.MONITOR_SET_COVERAGE,
            coverage_z=settings.MONITOR_COVERAGE_Z,
        )


@dataclass
class Reference:
    """What the live traffic is compared with: the training data's distributions."""

    class_shares: dict[str, float]
    text_length_shares: dict[str, float]
    image_share: float
    text_chars_mean: float
    source: str
    rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Flag:
    code: str
    value: float
    threshold: float
    detail: str


@dataclass
class Report:
    figures: dict[str, Any]
    flags: list[Flag] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    def flags_as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.flags]


# -- distributions ----------------------------------------------------------------------------


def shares(counts: Mapping[Any, float]) -> dict[str, float]:
    """Counts as shares summing to 1 (keys as strings); {} for no counts."""
    total = float(sum(counts.values()))
    if total <= 0:
        return {}
    return {str(k): v / total for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}


def psi(expected: Mapping[str, float], actual: Mapping[str, float], *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of `actual` against `expected` (shares over the same bins)."""
    total = 0.0
    for key in set(expected) | set(actual):
        e = max(float(expected.get(key, 0.0)), epsilon)
        a = max(float(actual.get(key, 0.0)), epsilon)
        total += (a - e) * math.log(a / e)
    return total


def text_length_bin(chars: int) -> str:
    """The bin label of a text length: '0', '1-49', ..., '2000+'."""
    lower = 0
    for upper in TEXT_LENGTH_EDGES:
        if chars < upper:
            return "0" if upper == 1 else f"{lower}-{upper - 1}"
        lower = upper
    return f"{TEXT_LENGTH_EDGES[-1]}+"


def confidence_histogram(values: Iterable[float], bins: int = CONFIDENCE_BINS) -> dict[str, int]:
    """Counts of probabilities in `bins` equal bins of [0, 1] ('0.0-0.1': n, ...)."""
    counts = [0] * bins
    for value in values:
        counts[min(int(float(value) * bins), bins - 1)] += 1
    return {f"{i / bins:.1f}-{(i + 1) / bins:.1f}": n for i, n in enumerate(counts)}


def hit_rates(logs: Sequence[LogRow], confirmed: Mapping[str, int], k: int) -> dict[str, Any]:
    """Top-1 and top-k hit rates over the answered logs that have a confirmed category."""
    judged = [log for log in logs if log.request_id in confirmed and log.predicted]
    if not judged:
        return {"confirmed": 0, "top1_hit_rate": None, "topk_hit_rate": None, "k": k}
    top1 = sum(1 for log in judged if log.predicted[0] == confirmed[log.request_id])
    topk = sum(1 for log in judged if confirmed[log.request_id] in log.predicted[:k])
    return {
        "confirmed": len(judged),
        "top1_hit_rate": top1 / len(judged),
        "topk_hit_rate": topk / len(judged),
        "k": k,
    }


def set_coverage(
    logs: Sequence[LogRow], confirmed: Mapping[str, int], *, promised: float, z: float
) -> dict[str, Any]:
    """Share of confirmed requests whose category was in the suggestion set shown, and its floor.

    The set is the first `suggestion_size` codes of the ranking (conformal sets are prefixes of
    it); when the set was longer than the logged ranking and the confirmed code is not in the
    ranking, whether it was in the set is unknown and the request is left out (counted as
    `unknown`). The floor is `promised - z * sqrt(promised * (1 - promised) / n)`: a coverage
    under it is unlikely (about 2.3% for z = 2) if the sets still kept their promise.
    """
    covered = judged = unknown = 0
    for log in logs:
        code = confirmed.get(log.request_id)
        if code is None or not log.predicted or log.suggestion_size is None:
            continue
        if code in log.predicted[: log.suggestion_size]:
            covered += 1
            judged += 1
        elif log.suggestion_size > len(log.predicted):
            unknown += 1
        else:
            judged += 1
    if not judged:
        return {"judged": 0, "covered": 0, "unknown": unknown, "coverage": None, "floor": None}
    floor = promised - z * math.sqrt(promised * (1.0 - promised) / judged)
    return {
        "judged": judged,
        "covered": covered,
        "unknown": unknown,
        "coverage": covered / judged,
        "promised": promised,
        "floor": floor,
    }


def input_figures(logs: Sequence[LogRow]) -> dict[str, Any]:
    """Text length and image share of a set of answered requests."""
    if not logs:
        return {"requests": 0, "text_chars_mean": None, "image_share": None, "text_length_shares": {}}
    return {
        "requests": len(logs),
        "text_chars_mean": statistics.fmean(log.text_chars for log in logs),
        "image_share": sum(1 for log in logs if log.has_image) / len(logs),
        "text_length_shares": shares(Counter(text_length_bin(log.text_chars) for log in logs)),
    }


def build_report(
    logs: Sequence[LogRow],
    confirmed: Mapping[str, int],
    reference: Reference,
    thresholds: Thresholds,
    *,
    previous: Sequence[LogRow] = (),
) -> Report:
    """The figures of one window and the flags they raise.

    Args:
        logs: every prediction log of the window (any outcome).
        confirmed: request id -> the category a seller confirmed for it.
        reference: the training distributions.
        thresholds: when to flag.
        previous: the logs of the window before, for the input trend (not flagged on).
    """
    answered = [log for log in logs if log.outcome == "ok" and log.top_prdtypecode is not None]
    figures: dict[str, Any] = {
        "requests": len(logs),
        "answered": len(answered),
        "outcomes": dict(sorted(Counter(log.outcome for log in logs).items())),
        "model_kinds": dict(sorted(Counter(log.model_kind or "none" for log in answered).items())),
        "model_versions": dict(sorted(Counter(log.model_version or "none" for log in answered).items())),
        "thresholds": asdict(thresholds),
        "reference": {
            k: v for k, v in reference.as_dict().items() if k not in ("class_shares", "text_length_shares")
        },
    }
    flags: list[Flag] = []

    hits = hit_rates(answered, confirmed, thresholds.top_k)
    figures["live_accuracy"] = hits
    if hits["confirmed"] >= thresholds.min_confirmed:
        if hits["top1_hit_rate"] < thresholds.min_top1_hit_rate:
            flags.append(
                Flag(
                    "low_top1_hit_rate",
                    hits["top1_hit_rate"],
                    thresholds.min_top1_hit_rate,
                    f"{hits['top1_hit_rate']:.1%} of {hits['confirmed']} confirmed requests were right at top 1",
                )
            )
        if hits["topk_hit_rate"] < thresholds.min_topk_hit_rate:
            flags.append(
                Flag(
                    "low_topk_hit_rate",
                    hits["topk_hit_rate"],
                    thresholds.min_topk_hit_rate,
                    f"{hits['topk_hit_rate']:.1%} of {hits['confirmed']} confirmed requests had the category in the top {hits['k']}",
                )
            )
    else:
        hits["judged"] = False
        hits["note"] = f"fewer than {thresholds.min_confirmed} confirmed requests: hit rates not judged"

    coverage = set_coverage(answered, confirmed, promised=thresholds.set_coverage, z=thresholds.coverage_z)
    figures["set_coverage"] = coverage
    if coverage["judged"] >= thresholds.min_confirmed:
        if coverage["coverage"] < coverage["floor"]:
            flags.append(
                Flag(
                    "low_set_coverage",
                    coverage["coverage"],
                    coverage["floor"],
                    f"{coverage['coverage']:.1%} of {coverage['judged']} confirmed categories were in the "
                    f"suggestion set shown, below the promised {thresholds.set_coverage:.0%} by more than "
                    f"{thresholds.coverage_z:g} standard errors (floor {coverage['floor']:.1%})",
                )
            )
    else:
        coverage["note"] = f"fewer than {thresholds.min_confirmed} confirmed requests: coverage not judged"

    probabilities = [float(log.top_probability) for log in answered if log.top_probability is not None]
    figures["confidence"] = {
        "mean": statistics.fmean(probabilities) if probabilities else None,
        "median": statistics.median(probabilities) if probabilities else None,
        "histogram": confidence_histogram(probabilities),
    }

    predicted = shares(
        Counter(int(log.top_prdtypecode) for log in answered if log.top_prdtypecode is not None)
    )
    current_inputs = input_figures(answered)
    figures["predicted_classes"] = predicted
    figures["inputs"] = current_inputs
    prev_answered = [log for log in previous if log.outcome == "ok" and log.top_prdtypecode is not None]
    if prev_answered:
        prev_inputs = input_figures(prev_answered)
        figures["previous_window"] = {
            **{k: v for k, v in prev_inputs.items() if k != "text_length_shares"},
            "text_length_psi": psi(prev_inputs["text_length_shares"], current_inputs["text_length_shares"]),
            "class_psi": psi(
                shares(
                    Counter(
                        int(log.top_prdtypecode) for log in prev_answered if log.top_prdtypecode is not None
                    )
                ),
                predicted,
            ),
        }

    if len(answered) < thresholds.min_requests:
        figures["drift"] = {
            "judged": False,
            "note": f"fewer than {thresholds.min_requests} answered requests",
        }
        return Report(figures, flags)

    class_psi = psi(reference.class_shares, predicted)
    text_psi = psi(reference.text_length_shares, current_inputs["text_length_shares"])
    image_delta = current_inputs["image_share"] - reference.image_share
    figures["drift"] = {
        "judged": True,
        "class_psi": class_psi,
        "text_length_psi": text_psi,
        "image_share_delta": image_delta,
    }
    mean_confidence = figures["confidence"]["mean"]
    if mean_confidence is not None and mean_confidence < thresholds.min_mean_confidence:
        flags.append(
            Flag(
                "low_confidence",
                mean_confidence,
                thresholds.min_mean_confidence,
                f"mean top-1 probability {mean_confidence:.3f}",
            )
        )
    if class_psi > thresholds.max_class_psi:
        flags.append(
            Flag(
                "prediction_drift",
                class_psi,
                thresholds.max_class_psi,
                f"predicted-class PSI {class_psi:.3f} against {reference.source}",
            )
        )
    if text_psi > thresholds.max_input_psi:
        flags.append(
            Flag(
                "text_length_drift",
                text_psi,
                thresholds.max_input_psi,
                f"text-length PSI {text_psi:.3f} (mean {current_inputs['text_chars_mean']:.0f} chars vs "
                f"{reference.text_chars_mean:.0f} in training)",
            )
        )
    if abs(image_delta) > thresholds.max_image_share_delta:
        flags.append(
            Flag(
                "image_share_drift",
                image_delta,
                thresholds.max_image_share_delta,
                f"{current_inputs['image_share']:.1%} of requests with an image vs {reference.image_share:.1%} in training",
            )
        )
    return Report(figures, flags)


# -- database -------------------------------------------------------------------------------------


def products_reference(*, session: Session) -> Reference:
    """The training distributions from the usable rows of the products table."""
    from models.preprocessing import combine_text

    classes: Counter[int] = Counter()
    lengths: Counter[str] = Counter()
    total_chars = 0
    with_image = 0
    rows = 0
    for code, designation, description, has_image in monitoring.usable_products(session=session):
        rows += 1
        classes[code] += 1
        chars = len(combine_text(designation, description))
        total_chars += chars
        lengths[text_length_bin(chars)] += 1
        with_image += has_image
    return Reference(
        class_shares=shares(classes),
        text_length_shares=shares(lengths),
        image_share=with_image / rows if rows else 0.0,
        text_chars_mean=total_chars / rows if rows else 0.0,
        source="products table",
        rows=rows,
    )


def bundle_class_shares(metadata: Mapping[str, Any]) -> dict[str, float] | None:
    """The training class distribution a bundle's metadata records, if it records one."""
    for key in CLASS_COUNT_KEYS:
        counts = metadata.get(key)
        if isinstance(counts, Mapping) and counts:
            return shares({str(k): float(v) for k, v in counts.items()})
    return None


def store_report(
    *, session: Session, start: datetime, end: datetime, model_version: str | None, report: Report
) -> MonitoringReport:
    """Save the report of a window, replacing an earlier one of the same window (reruns)."""
    return monitoring.save_report(
        session=session,
        window_start=start,
        window_end=end,
        model_version=model_version,
        figures=report.figures,
        flagged=report.flagged,
        flags=report.flags_as_dicts(),
    )


def monitor_window(settings: Any, start: datetime, end: datetime) -> dict[str, Any]:
    """Build and store the report of [start, end); a small summary for the DAG (XCom)."""
    from db.session import make_engine, make_session_factory
    from store.model_store import open_model_store

    thresholds = Thresholds.from_settings(settings)
    engine = make_engine(settings.DATABASE_URL)
    try:
        with make_session_factory(engine)() as session:
            logs = monitoring.window_logs(session=session, since=start, until=end)
            previous = monitoring.window_logs(session=session, since=start - (end - start), until=start)
            confirmed = {
                c.request_id: c.confirmed
                for c in monitoring.confirmed_predictions(session=session, since=start, until=end)
            }
            reference = products_reference(session=session)
            production = None
            try:
                store = open_model_store(settings.MODEL_STORE_URI)
                production = store.production()
                if production is not None:
                    bundle_shares = bundle_class_shares(store.manifest(production).metadata)
                    if bundle_shares:
                        reference.class_shares = bundle_shares
                        reference.source = f"training data of {production}"
            except Exception as exc:  # the store being down must not stop the report
                logger.warning("model store unreachable (%s): the products table is the reference", exc)
            report = build_report(logs, confirmed, reference, thresholds, previous=previous)
            report.figures["production_version"] = production
            served = report.figures["model_versions"]
            model_version = max(served, key=served.get) if served else production
            row = store_report(
                session=session, start=start, end=end, model_version=model_version, report=report
            )
    finally:
        engine.dispose()
    summary = {
        "report_id": row.id,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "answered": report.figures["answered"],
        "flagged": report.flagged,
        "flags": [f.code for f in report.flags],
    }
    logger.info("monitoring report %s: %s", row.id, summary)
    for flag in report.flags:
        logger.warning("flag %s: %s (threshold %s)", flag.code, flag.detail, flag.threshold)
    return summary


def _utc(text: str) -> datetime:
    """An ISO 8601 date or time from the command line, as an aware UTC datetime."""
    from datetime import UTC

    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """`python -m pipelines.monitor --start ISO --end ISO`: the DAG's report task, from a shell."""
    import argparse
    import json
    from datetime import timedelta

    from config import get_settings

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.monitor",
        description=(
            "Build and store the live quality report of one window of prediction logs, exactly as "
            "the daily monitoring DAG (airflow/dags/monitor.py) does: live hit rates on products "
            "sellers confirmed, confidence, predicted-class and input drift, flags past the "
            "MONITOR_* thresholds. The admin console shows the latest report. A rerun of the "
            "same window replaces its report."
        ),
        epilog="Example: python -m pipelines.monitor --start 2026-12-01T00:00 --end 2026-12-02T00:00",
    )
    parser.add_argument("--start", type=_utc, help="window start, ISO 8601 (default: END minus 1 day)")
    parser.add_argument("--end", type=_utc, help="window end, ISO 8601, excluded (default: now)")
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.LOG_LEVEL, format="%(asctime)s %(name)s: %(message)s")
    from datetime import UTC

    end = args.end or datetime.now(UTC)
    start = args.start or end - timedelta(days=1)
    if start >= end:
        parser.error("--start must be before --end")
    summary = monitor_window(settings, start, end)
    print(json.dumps(summary, indent=2))  # noqa: T201 - the CLI's output
    return summary


if __name__ == "__main__":
    main()
