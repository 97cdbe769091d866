"""Label quality: hold back the confirmations of a seller who disagrees with everyone far more than usual.

A seller's confirmation is the label a retraining learns from. Honest sellers make mistakes
now and then, and when the catalogue shifts every seller disagrees with the model more; what
none of them does is disagree, far more than the others, with the model AND with what the other
sellers confirm for the same kind of listing. That is what a flood of wrong labels looks like
(a script, a misunderstanding of the categories, an attack), and what this check finds.

For every seller with at least `min_confirmations` confirmations that a prediction backs:

- **model disagreement**: the share of their confirmations that are not the model's top-1
  answer, against the pooled share of every other seller's;
- **peer disagreement**: the share of their confirmations that differ from the label the other
  sellers confirmed most for the same top-1 answer (where at least `min_peers` of theirs exist),
  against the same share of each other seller, each judged against the rest (leave one out).

A seller whose model disagreement exceeds the others' by more than `max_excess`, significantly
(a two-proportion z above `z`), and whose peer disagreement also exceeds the others' by more
than `max_excess`, is suspect: their unverified products are quarantined with a reason
(`suspect_seller: ...`) and so held back from training, the live hit rates and the gate's live
holdout, until an admin verifies them (PATCH /products/{id} with `label_status=verified`; a
verified product is never quarantined by this check again).

`find_suspects` is a plain function of plain values; `hold_back_suspect_labels` runs it on the
database (the queries are `db.products`'), and the retraining DAG's validate task calls it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db import products
from db.products import SellerConfirmation

logger = logging.getLogger(__name__)

SUSPECT_SELLER = "suspect_seller"


@dataclass(frozen=True)
class LabelQualityLimits:
    """When a seller's confirmations are held back (from the LABEL_QUALITY_* settings)."""

    min_confirmations: int = 20
    min_peers: int = 3
    max_excess: float = 0.30
    z: float = 4.0

    @classmethod
    def from_settings(cls, settings: Any) -> LabelQualityLimits:
        return cls(
            min_confirmations=settings.LABEL_QUALITY_MIN_CONFIRMATIONS,
            max_excess=settings.LABEL_QUALITY_MAX_EXCESS,
            z=settings.LABEL_QUALITY_Z,
        )


@dataclass(frozen=True)
class SellerFigures:
    """One seller's disagreement figures, against the other sellers'."""

    seller_id: int
    confirmations: int
    model_disagreement: float
    others_model_disagreement: float | None
    z: float | None
    peer_judged: int
    peer_disagreement: float | None
    others_peer_disagreement: float | None
    suspect: bool

    def reason(self) -> str:
        return (
            f"{SUSPECT_SELLER}: seller {self.seller_id}'s {self.confirmations} confirmations disagree with "
            f"the model's answer {self.model_disagreement:.0%} of the time (other sellers "
            f"{self.others_model_disagreement or 0:.0%}, z {self.z or 0:.1f}) and with what other sellers "
            f"confirmed for the same answer {self.peer_disagreement or 0:.0%} of the time (others "
            f"{self.others_peer_disagreement or 0:.0%}); held back until an admin verifies them"
        )


def _two_proportion_z(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float | None:
    if not n_a or not n_b:
        return None
    pooled = (hits_a + hits_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    if spread == 0:
        return 0.0 if hits_a / n_a == hits_b / n_b else math.inf
    return (hits_a / n_a - hits_b / n_b) / spread


def _peer_disagreement(
    mine: Sequence[SellerConfirmation], peers: Sequence[SellerConfirmation], min_peers: int
) -> tuple[int, int]:
    """(judged, disagreeing): my labels against the peers' most confirmed label per top-1 answer."""
    by_answer: dict[int, Counter[int]] = defaultdict(Counter)
    for c in peers:
        by_answer[c.top1].update([c.confirmed])
    judged = disagreeing = 0
    for c in mine:
        labels = by_answer.get(c.top1)
        if not labels or sum(labels.values()) < min_peers:
            continue
        judged += 1
        disagreeing += int(c.confirmed != labels.most_common(1)[0][0])
    return judged, disagreeing


def find_suspects(
    confirmations: Sequence[SellerConfirmation], limits: LabelQualityLimits
) -> list[SellerFigures]:
    """Every seller's figures (largest model disagreement first), `suspect` set where limits are passed."""
    usable = [c for c in confirmations if c.seller_id is not None and c.top1 is not None]
    by_seller: dict[int, list[SellerConfirmation]] = defaultdict(list)
    for c in usable:
        by_seller[c.seller_id].append(c)  # type: ignore[index]
    peer_rates: dict[int, tuple[int, int]] = {
        seller: _peer_disagreement(mine, [c for c in usable if c.seller_id != seller], limits.min_peers)
        for seller, mine in by_seller.items()
    }
    total_n = len(usable)
    total_wrong = sum(1 for c in usable if c.confirmed != c.top1)
    figures = []
    for seller, mine in by_seller.items():
        n = len(mine)
        wrong = sum(1 for c in mine if c.confirmed != c.top1)
        others_n, others_wrong = total_n - n, total_wrong - wrong
        others_rate = others_wrong / others_n if others_n else None
        z = _two_proportion_z(wrong, n, others_wrong, others_n)
        judged, disagreeing = peer_rates[seller]
        peer_rate = disagreeing / judged if judged else None
        others_judged = sum(j for s, (j, _) in peer_rates.items() if s != seller)
        others_disagreeing = sum(d for s, (_, d) in peer_rates.items() if s != seller)
        others_peer = others_disagreeing / others_judged if others_judged else None
        suspect = (
            n >= limits.min_confirmations
            and others_rate is not None
            and wrong / n - others_rate > limits.max_excess
            and z is not None
            and z > limits.z
            and peer_rate is not None
            and others_peer is not None
            and peer_rate - others_peer > limits.max_excess
        )
        figures.append(
            SellerFigures(
                seller_id=seller,
                confirmations=n,
                model_disagreement=wrong / n,
                others_model_disagreement=others_rate,
                z=z,
                peer_judged=judged,
                peer_disagreement=peer_rate,
                others_peer_disagreement=others_peer,
                suspect=suspect,
            )
        )
    figures.sort(key=lambda f: f.model_disagreement, reverse=True)
    return figures


def hold_back_suspect_labels(
    session_factory: sessionmaker[Session], limits: LabelQualityLimits
) -> dict[str, Any]:
    """Quarantine the unverified confirmations of suspect sellers; what was found and done."""
    with session_factory() as session:
        confirmations = products.seller_confirmations(session=session)
        figures = find_suspects(confirmations, limits)
        quarantined: dict[str, int] = {}
        for seller in (f for f in figures if f.suspect):
            ids = [
                c.id
                for c in confirmations
                if c.seller_id == seller.seller_id and c.label_status == "unverified"
            ]
            count = products.quarantine_products(session=session, ids=ids, reason=seller.reason())
            quarantined[str(seller.seller_id)] = count
            logger.warning("%s: %d products quarantined", seller.reason(), count)
        session.commit()
    return {
        "sellers": len(figures),
        "suspects": [asdict(f) for f in figures if f.suspect],
        "quarantined": quarantined,
        "total_quarantined": sum(quarantined.values()),
        "limits": asdict(limits),
    }
