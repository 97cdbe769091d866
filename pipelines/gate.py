"""The promotion gate: does a candidate model beat the production one enough to replace it?

Both inputs are evaluate-schema dicts (`{"text"|"image"|"fusion": {n, weighted_f1,
per_class_recall, per_class_top5_recall, ...}}`) computed on the SAME evaluation set. The gating
metric is weighted F1:

1. the n-weighted mean weighted F1 over the model kinds evaluated (n > 0) must beat
   production's by more than `min_improvement`;
2. no kind may lose more than `max_kind_drop` weighted F1 (a better fusion model must not
   hide a broken text model that the API also serves), unless the loss is within sampling
   noise: with `paired` (per kind, the held-out products only one of the two models gets
   right), a loss counts only when McNemar's exact test says the candidate is worse at level
   `alpha` (one-sided). A quick image model's weighted F1 moves by 0.04 between two trainings
   on the same data; that is noise on 400 products, not a worse model. The kinds are tested
   together, so their p-values are Holm-adjusted (Holm 1979): three tests at 5% each would
   refuse a candidate no worse than production one time in seven, the adjusted ones at most
   one time in twenty;
3. no class may lose more than `max_recall_drop` of its short-list recall (the share of its
   products with the class among the five best answers, `per_class_top5_recall`; the top-1
   `per_class_recall` for metrics without it) in any kind: a small global gain must not hide
   a category that sellers can no longer find among the suggestions they are shown. Top-1
   losses are weighted F1's job: when a new category appears that resembles an old one
   (second-hand books beside new ones), the old one's top-1 recall has to fall, while both stay
   in the short list. Only classes with at least `min_class_support` products in the
   evaluation set (`per_class_support`) are judged: on a class of one or two products, a
   recall swings between 0 and 1 on a single answer and says nothing.

Without a production model the candidate is promoted.

The fixed split is the *verified* products held out of training (`pipelines.snapshot`): a
yardstick that sellers' confirmations do not move.

**Live evidence.** The fixed split holds products of every age, mostly the catalogue as it was;
when what sellers list changes, the recent confirmations are the better witness. So `decide`
also takes both models' metrics on a *live holdout*: products sellers confirmed recently that
the candidate did not train on. With at least `min_live_rows` of them, the candidate must also
not be worse there: its n-weighted weighted F1 may not fall below production's by more than
`max_live_drop`, nor any kind's (per-class recalls are not compared on a set this small). With
the live holdout's own paired counts (`live["paired"]`), a kind's loss there counts only when
McNemar's test says so, as in rule 2: at first the holdout has a few dozen products per kind,
where one answer moves a kind's F1 by several points and would refuse a repair far better
overall. The improvement of rule 1 may come from either evidence: a candidate that is better on
the live holdout (by more than `min_improvement`) and not worse on the fixed split (rules 2 and
3) is promoted: that is the repair of a shift, which the fixed split, made of the catalogue as
it was, cannot see. A loss beyond tolerance on either
evidence refuses.

**The price of new categories.** A repair that learns a category the fixed split does not hold
(second-hand books, say) must send some of the split's products there (new books that look
second-hand): a cost that production, which never heard of the category, does not pay. So
"not worse on the fixed split" is judged on its *closed view* (`closed`, from
`models.training.evaluate`): both models' answers restricted to the categories the split
holds, where rules 2 and 3 apply unchanged. That cost itself is bounded: no kind may lose more
than `max_new_class_cost` weighted F1 on the split as it is. A flood of wrong labels onto a
category the split holds is no cheaper in the closed view; onto a new one, it pays that price
on every product it took. The decision says which evidence decided (`evidence`): the one that refused,
or every one that was judged when the candidate is promoted.

**Shadow evidence.** When the candidate was shadowed (the API ran it beside production on live
requests, `api/shadow.py`), `shadow` holds both top-1 hit rates on the same confirmed requests;
from `min_live_rows` of them the candidate's may not fall below production's by more than
`max_live_drop` either (evidence `shadow`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

DEFAULT_MAX_KIND_DROP = 0.01
DEFAULT_MIN_LIVE_ROWS = 30
DEFAULT_MAX_LIVE_DROP = 0.02
DEFAULT_ALPHA = 0.05
DEFAULT_MAX_NEW_CLASS_COST = 0.05
HELD_OUT = "held_out"
LIVE_HOLDOUT = "live_holdout"
SHADOW = "shadow"
SHORT_LIST_RECALL = "per_class_top5_recall"


@dataclass(frozen=True)
class KindComparison:
    kind: str
    n: int
    candidate: float
    production: float
    # McNemar's one-sided exact p-value that the candidate is worse (None: no paired counts).
    p_worse: float | None = None
    # The same, Holm-adjusted over the kinds compared: the one the gate judges.
    p_adjusted: float | None = None

    @property
    def delta(self) -> float:
        return self.candidate - self.production


@dataclass(frozen=True)
class RecallDrop:
    kind: str
    label: str
    candidate: float
    production: float

    @property
    def drop(self) -> float:
        return self.production - self.candidate


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict and every figure it compared."""

    promote: bool
    reason: str
    candidate_score: float | None
    production_score: float | None
    min_improvement: float
    max_recall_drop: float
    max_kind_drop: float
    min_class_support: int = 1
    kinds: tuple[KindComparison, ...] = ()
    recall_drops: tuple[RecallDrop, ...] = field(default=())
    evidence: str = HELD_OUT  # which evidence decided: the one that refused, or all that were judged
    live: dict[str, Any] | None = None  # the live holdout's comparison, when there was one
    shadow: dict[str, Any] | None = None  # both live hit rates while the candidate was shadowed
    closed: dict[str, Any] | None = None  # the fixed split's closed view, when it was judged

    @property
    def improvement(self) -> float | None:
        if self.candidate_score is None or self.production_score is None:
            return None
        return self.candidate_score - self.production_score

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready record (for the model versions table and the DAG's logs)."""
        data = asdict(self)
        data["improvement"] = self.improvement
        data["kinds"] = [{**asdict(k), "delta": k.delta} for k in self.kinds]
        data["recall_drops"] = [{**asdict(r), "drop": r.drop} for r in self.recall_drops]
        return data


def _evaluated_kinds(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        kind: figures
        for kind, figures in metrics.items()
        if isinstance(figures, dict) and (figures.get("n") or 0) > 0
    }


def _weighted_score(kinds: tuple[KindComparison, ...], side: str) -> float:
    total = sum(k.n for k in kinds)
    return sum(k.n * getattr(k, side) for k in kinds) / total


def _recall(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _p_worse(counts: dict[str, Any] | None) -> float | None:
    """McNemar's exact one-sided p-value that the candidate gets fewer products right."""
    if not counts:
        return None
    from scipy.stats import binomtest

    production_only, candidate_only = int(counts["production_only"]), int(counts["candidate_only"])
    if production_only + candidate_only == 0:
        return 1.0
    return float(
        binomtest(production_only, production_only + candidate_only, 0.5, alternative="greater").pvalue
    )


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of p-values tested together (family-wise error at most alpha).

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) * p_(j)).
    """
    adjusted: dict[str, float] = {}
    running = 0.0
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    for rank, (name, value) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * value))
        adjusted[name] = running
    return adjusted


def _recall_key(candidate: dict[str, Any], production: dict[str, Any]) -> str:
    """The per-class recall the gate compares: the short-list one when both models report it."""
    if candidate.get(SHORT_LIST_RECALL) is not None and production.get(SHORT_LIST_RECALL) is not None:
        return SHORT_LIST_RECALL
    return "per_class_recall"


def decide(
    candidate: dict[str, Any],
    production: dict[str, Any] | None,
    *,
    min_improvement: float,
    max_recall_drop: float,
    max_kind_drop: float = DEFAULT_MAX_KIND_DROP,
    min_class_support: int = 1,
    paired: dict[str, Any] | None = None,
    alpha: float = DEFAULT_ALPHA,
    live: dict[str, Any] | None = None,
    min_live_rows: int = DEFAULT_MIN_LIVE_ROWS,
    max_live_drop: float = DEFAULT_MAX_LIVE_DROP,
    shadow: dict[str, Any] | None = None,
    closed: dict[str, Any] | None = None,
    max_new_class_cost: float = DEFAULT_MAX_NEW_CLASS_COST,
) -> GateDecision:
    """Decide whether to promote `candidate` over `production`.

    Args:
        candidate: the candidate's metrics on the evaluation set.
        production: the production model's metrics on the same set, or None if there is none.
        min_improvement: how much the n-weighted mean weighted F1 must exceed production's by.
        max_recall_drop: the largest recall loss tolerated for any class of any kind.
        max_kind_drop: the largest weighted F1 loss tolerated for any single kind.
        min_class_support: class recalls are compared only for classes with at least this many
            products in the evaluation set (metrics without `per_class_support`: every class).
        paired: per kind, `{"n", "candidate_only", "production_only"}` on the evaluation set
            (`models.training.evaluate.paired_counts`); None: every loss beyond tolerance counts.
        alpha: the level of McNemar's test below which a kind's loss is not noise.
        live: both models on the live holdout, `{"rows", "candidate", "production"}` (metrics
            of the evaluate schema), or None when there is none.
        min_live_rows: fewer live products than this: the live holdout is reported, not judged.
        max_live_drop: the largest weighted F1 loss on the live holdout tolerated (overall and
            per kind), and the largest top-1 hit-rate loss while shadowed.
        shadow: `{"confirmed", "production_top1_rate", "shadow_top1_rate"}` from the shadow
            window, or None when the candidate was not shadowed.
        closed: the fixed split's closed view, `{"classes", "candidate", "production", "paired"}`
            (metrics and paired counts with the answers restricted to the split's categories),
            or None: "not worse on the fixed split" is then judged on the split as it is.
        max_new_class_cost: with `closed`, the largest weighted F1 loss per kind tolerated on the
            split as it is (the price of the categories it does not hold).

    Returns:
        The decision with the figures compared.

    Raises:
        ValueError: the two were not evaluated on the same set (different n for a kind).
    """
    held_out = {
        "max_recall_drop": max_recall_drop,
        "max_kind_drop": max_kind_drop,
        "min_class_support": min_class_support,
        "paired": paired,
        "alpha": alpha,
    }
    held = _held_out_decision(candidate, production, min_improvement=min_improvement, **held_out)
    # The same split read as "not worse": no kind or class beyond tolerance (rules 2 and 3), in
    # its closed view when there is one. With a better live holdout, that is enough (the repair
    # of a shift).
    not_worse = (
        held
        if held.promote or held.improvement is None
        else _not_worse(held, candidate, production, closed, max_new_class_cost, held_out)
    )
    decision = _with_live(
        held,
        not_worse,
        production,
        live,
        min_improvement=min_improvement,
        min_live_rows=min_live_rows,
        max_live_drop=max_live_drop,
    )
    if shadow is None or production is None:
        return decision
    confirmed = int(shadow.get("confirmed") or 0)
    record = {**shadow, "min_rows": min_live_rows, "max_drop": max_live_drop}
    if confirmed < min_live_rows or shadow.get("shadow_top1_rate") is None:
        return replace(decision, shadow={**record, "judged": False})
    loss = float(shadow["production_top1_rate"]) - float(shadow["shadow_top1_rate"])
    passed = loss <= max_live_drop
    record.update(judged=True, passed=passed)
    if not decision.promote:
        return replace(decision, shadow=record)
    if not passed:
        reason = (
            f"in shadow, on {confirmed} confirmed requests, the candidate's live top-1 hit rate "
            f"{shadow['shadow_top1_rate']:.3f} is below production's {shadow['production_top1_rate']:.3f} "
            f"by more than {max_live_drop:.3f}"
        )
        return replace(decision, promote=False, reason=reason, evidence=SHADOW, shadow=record)
    reason = (
        f"{decision.reason}; in shadow on {confirmed} confirmed requests: top-1 "
        f"{shadow['shadow_top1_rate']:.3f} vs production {shadow['production_top1_rate']:.3f}"
    )
    return replace(decision, reason=reason, evidence=f"{decision.evidence}+{SHADOW}", shadow=record)


def _with_live(
    held: GateDecision,
    not_worse: GateDecision,
    production: dict[str, Any] | None,
    live: dict[str, Any] | None,
    *,
    min_improvement: float,
    min_live_rows: int,
    max_live_drop: float,
) -> GateDecision:
    """The fixed split's decision, judged again with the live holdout when there is enough of it.

    `not_worse` is the fixed split's verdict when only a loss beyond tolerance refuses.
    """
    if live is None or production is None or live.get("production") is None:
        return held
    rows = int(live.get("rows") or 0)
    record: dict[str, Any] = {"rows": rows, "min_rows": min_live_rows, "max_drop": max_live_drop}
    if rows < min_live_rows:
        record["judged"] = False
        record["note"] = f"{rows} live products, fewer than {min_live_rows}: not judged"
        return replace(held, live=record)
    compared = _held_out_decision(
        live["candidate"],
        live["production"],
        min_improvement=-max_live_drop - 1e-12,
        max_recall_drop=1.0,
        max_kind_drop=max_live_drop,
        # A kind's loss on a few dozen live products is judged against noise, as on the split.
        paired=live.get("paired"),
    )
    better = compared.improvement is not None and compared.improvement > min_improvement
    record.update(
        judged=True,
        passed=compared.promote,
        better=better,
        candidate_score=compared.candidate_score,
        production_score=compared.production_score,
        improvement=compared.improvement,
        kinds=[{**asdict(k), "delta": k.delta} for k in compared.kinds],
        reason=compared.reason,
    )
    where = f"on {rows} recently confirmed products the candidate did not train on"
    if not compared.promote:
        if not held.promote:
            return replace(held, live=record)
        return replace(
            held, promote=False, reason=f"{where}: {compared.reason}", evidence=LIVE_HOLDOUT, live=record
        )
    if held.promote:
        reason = f"{held.reason}; live holdout of {rows}: {compared.reason}"
        return replace(held, reason=reason, evidence=f"{HELD_OUT}+{LIVE_HOLDOUT}", live=record)
    if better and not_worse.promote:
        reason = (
            f"{where}: weighted F1 {compared.candidate_score:.4f} vs production "
            f"{compared.production_score:.4f} ({compared.improvement:+.4f}); on the fixed split not "
            f"worse beyond tolerance: {not_worse.reason}"
        )
        return replace(
            held,
            promote=True,
            reason=reason,
            recall_drops=not_worse.recall_drops,
            evidence=f"{LIVE_HOLDOUT}+{HELD_OUT}",
            live=record,
            closed=not_worse.closed,
        )
    if better:
        reason = (
            f"{held.reason}; better {where} ({compared.improvement:+.4f} weighted F1), but worse on the "
            f"fixed split: {not_worse.reason}"
        )
        return replace(
            held, reason=reason, recall_drops=not_worse.recall_drops, live=record, closed=not_worse.closed
        )
    return replace(held, live=record)


def _not_worse(
    held: GateDecision,
    candidate: dict[str, Any],
    production: dict[str, Any] | None,
    closed: dict[str, Any] | None,
    max_new_class_cost: float,
    limits: dict[str, Any],
) -> GateDecision:
    """Is the candidate not worse on the fixed split (rules 2 and 3, no improvement asked)?

    Judged on the closed view when there is one, within `max_new_class_cost` on the split as
    it is (the module docstring's "price of new categories"); `held` is the split's verdict as
    it is. The decision's `closed` records what was compared.
    """
    if not closed or not closed.get("production") or not closed.get("candidate"):
        verdict = _held_out_decision(candidate, production, min_improvement=-2.0, **limits)
        if verdict.promote:
            verdict = replace(
                verdict,
                reason=f"weighted F1 {verdict.candidate_score:.4f} vs {verdict.production_score:.4f} "
                f"({verdict.improvement:+.4f}), no kind or class recall degraded beyond tolerance",
            )
        return verdict
    classes = list(closed.get("classes") or [])
    view = _held_out_decision(
        closed["candidate"],
        closed["production"],
        min_improvement=-2.0,
        **{**limits, "paired": closed.get("paired")},
    )
    record = {
        "classes": classes,
        "max_new_class_cost": max_new_class_cost,
        "candidate_score": view.candidate_score,
        "production_score": view.production_score,
        "improvement": view.improvement,
        "kinds": [{**asdict(k), "delta": k.delta} for k in view.kinds],
        "passed": view.promote,
        "reason": view.reason,
    }
    among = f"among the {len(classes)} categories the fixed split holds"
    if not view.promote:
        return replace(view, reason=f"{among}: {view.reason}", closed=record)
    costly = [k for k in held.kinds if -k.delta > max_new_class_cost]
    if costly:
        detail = ", ".join(f"{k.kind} {k.delta:+.4f}" for k in costly)
        record["passed"] = False
        reason = (
            f"{among} not worse ({view.improvement:+.4f} weighted F1), but on the split as it is "
            f"a model kind lost more than the {max_new_class_cost:.2f} weighted F1 that categories "
            f"it does not hold may cost: {detail}"
        )
        return replace(view, promote=False, reason=reason, closed=record)
    reason = (
        f"{among}: weighted F1 {view.candidate_score:.4f} vs {view.production_score:.4f} "
        f"({view.improvement:+.4f}), no kind or class recall degraded beyond tolerance; as it is: "
        f"{held.candidate_score:.4f} vs {held.production_score:.4f} ({held.improvement:+.4f}), "
        f"within the {max_new_class_cost:.2f} that categories it does not hold may cost"
    )
    return replace(view, reason=reason, closed=record)


def _held_out_decision(
    candidate: dict[str, Any],
    production: dict[str, Any] | None,
    *,
    min_improvement: float,
    max_recall_drop: float,
    max_kind_drop: float,
    min_class_support: int = 1,
    paired: dict[str, Any] | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> GateDecision:
    """The verdict of one evaluation set (the rules of the module docstring)."""
    limits = {
        "min_improvement": min_improvement,
        "max_recall_drop": max_recall_drop,
        "max_kind_drop": max_kind_drop,
        "min_class_support": min_class_support,
    }
    cand_kinds = _evaluated_kinds(candidate)
    if not cand_kinds:
        return GateDecision(False, "the candidate has no evaluated model kind (n > 0)", None, None, **limits)
    if production is None:
        score = sum(f["n"] * float(f["weighted_f1"]) for f in cand_kinds.values()) / sum(
            f["n"] for f in cand_kinds.values()
        )
        return GateDecision(True, "no production model: the candidate is promoted", score, None, **limits)

    prod_kinds = _evaluated_kinds(production)
    missing = sorted(set(prod_kinds) - set(cand_kinds))
    if missing:
        return GateDecision(
            False,
            f"the candidate lacks model kinds that production has: {', '.join(missing)}",
            None,
            None,
            **limits,
        )
    common = sorted(set(cand_kinds) & set(prod_kinds))
    if not common:
        return GateDecision(
            False, "no model kind evaluated for both candidate and production", None, None, **limits
        )
    for kind in common:
        if cand_kinds[kind]["n"] != prod_kinds[kind]["n"]:
            raise ValueError(
                f"{kind}: candidate evaluated on {cand_kinds[kind]['n']} items, production on "
                f"{prod_kinds[kind]['n']}: the gate needs both on the same evaluation set"
            )

    kinds = tuple(
        KindComparison(
            kind=kind,
            n=int(cand_kinds[kind]["n"]),
            candidate=float(cand_kinds[kind]["weighted_f1"]),
            production=float(prod_kinds[kind]["weighted_f1"]),
            p_worse=_p_worse((paired or {}).get(kind)),
        )
        for kind in common
    )
    adjusted = holm({k.kind: k.p_worse for k in kinds if k.p_worse is not None})
    kinds = tuple(replace(k, p_adjusted=adjusted.get(k.kind)) for k in kinds)
    drops = []
    for kind in common:
        key = _recall_key(cand_kinds[kind], prod_kinds[kind])
        cand_recall = cand_kinds[kind].get(key) or {}
        support = prod_kinds[kind].get("per_class_support") or {}
        for label, prod_value in (prod_kinds[kind].get(key) or {}).items():
            before = _recall(prod_value)
            if before is None or int(support.get(label, min_class_support)) < min_class_support:
                continue
            # A class the candidate no longer reports is a class it no longer finds.
            after = _recall(cand_recall.get(label)) or 0.0
            if before - after > max_recall_drop:
                drops.append(RecallDrop(kind=kind, label=str(label), candidate=after, production=before))
    drops.sort(key=lambda r: r.drop, reverse=True)

    cand_score, prod_score = _weighted_score(kinds, "candidate"), _weighted_score(kinds, "production")
    figures = {"candidate_score": cand_score, "production_score": prod_score, "kinds": kinds, **limits}
    improvement = cand_score - prod_score
    worse = [k for k in kinds if -k.delta > max_kind_drop and (k.p_adjusted is None or k.p_adjusted < alpha)]
    if improvement <= min_improvement:
        reason = (
            f"weighted F1 {cand_score:.4f} vs production {prod_score:.4f}: improvement {improvement:+.4f} "
            f"is not above the required {min_improvement:+.4f}"
        )
        return GateDecision(False, reason, recall_drops=tuple(drops), **figures)
    if worse:
        detail = ", ".join(
            f"{k.kind} {k.delta:+.4f}"
            + ("" if k.p_worse is None else f" (McNemar p {k.p_worse:.3g}, Holm-adjusted {k.p_adjusted:.3g})")
            for k in worse
        )
        reason = f"a model kind got worse by more than {max_kind_drop:.4f} weighted F1: {detail}"
        return GateDecision(False, reason, recall_drops=tuple(drops), **figures)
    if drops:
        detail = ", ".join(f"{r.kind}/{r.label} {r.production:.2f}→{r.candidate:.2f}" for r in drops[:5])
        reason = f"{len(drops)} class recall(s) fell by more than {max_recall_drop:.2f}: {detail}"
        return GateDecision(False, reason, recall_drops=tuple(drops), **figures)
    reason = (
        f"weighted F1 {cand_score:.4f} vs production {prod_score:.4f} ({improvement:+.4f}), "
        "no kind or class recall degraded beyond tolerance"
    )
    return GateDecision(True, reason, **figures)
