"""The learning-loop scenario's own logic: how it splits a catalogue and when a run proves the loop.

The scenario itself (the real API and DAGs, minutes) runs in `.ci/run` (`make learning-loop`).
"""

from __future__ import annotations

import random
from pathlib import Path

from benchmarks.learning_loop import QUICK, Listing, problems, split_catalogue

PROVEN = {
    "worse_candidate_promoted": False,
    "failed_requests": 0,
    "flags": ["low_set_coverage"],
    "hit_rate_during_drift": 0.45,
    "hit_rate_after": 0.80,
    "promoted_version": "v2",
}


def catalogue() -> list[Listing]:
    return [
        Listing(f"{code}-{i}", f"titre {code}", "", code, Path("x.jpg") if i % 2 else None)
        for code, size in zip(range(10, 30), range(60, 20, -2), strict=True)
        for i in range(size)
    ]


def test_held_back_categories_never_reach_week_0_and_the_flood_pool_is_apart():
    split = split_catalogue(catalogue(), QUICK, random.Random(0))

    week0_codes = {item.code for item in split.week0}
    assert len(split.held_back) == QUICK.held_back and not week0_codes & set(split.held_back)
    assert {item.code for item in split.new} == set(split.held_back)
    assert {item.code for item in split.flood} <= set(split.flood_codes)
    assert split.flood_label not in split.flood_codes and split.flood_label not in split.held_back
    assert not {item.code for item in split.old} & set(split.held_back)
    # The flood takes part of its category's products: the sellers' traffic keeps the rest.
    assert {item.code for item in split.old} & set(split.flood_codes)
    ids = [i.productid for part in (split.week0, split.old, split.new, split.flood) for i in part]
    assert len(ids) == len(set(ids)) == len(catalogue())


def test_a_run_that_shows_every_part_of_the_loop_is_proven():
    assert problems(PROVEN) == []


def test_each_missing_part_of_the_loop_is_a_problem():
    assert problems({**PROVEN, "worse_candidate_promoted": True}) == ["the worse candidate was promoted"]
    assert problems({**PROVEN, "failed_requests": 2, "failures": ["x"]})[0].startswith("2 failed requests")
    assert problems({**PROVEN, "flags": []}) == ["nothing was flagged"]
    assert "not clearly above" in problems({**PROVEN, "hit_rate_after": 0.5})[0]
    assert problems({**PROVEN, "promoted_version": None}) == ["no repaired version was promoted"]
