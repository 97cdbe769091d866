"""What a model version was trained on, read from its bundle metadata, for `/models` and the pages.

A bundle records where its training data came from (`data_sources`, written by training; the
bootstrap adds an explicit `training_data` entry). Three kinds are told apart:

- ``synthetic``: the synthetic catalogue of `catalog.synthetic` (a demo: near chance on real
  listings' photos, and not a measure of real quality);
- ``folder``: a challenge-layout folder imported or read directly;
- ``products``: the product database, directly or through a retraining snapshot.
"""

from __future__ import annotations

from typing import Any

KIND_LABELS = {
    "synthetic": "synthetic demo catalogue",
    "folder": "imported folder",
    "products": "product snapshot",
}


def training_data(metadata: dict[str, Any]) -> dict[str, Any]:
    """`{"kind", "label", "detail", "demo"}` of the data a bundle was trained on."""
    explicit = metadata.get("training_data")
    if isinstance(explicit, dict) and explicit.get("kind") in KIND_LABELS:
        kind, detail = explicit["kind"], str(explicit.get("detail") or "")
    else:
        sources = str(metadata.get("data_sources") or "")
        parts = [p for p in sources.split("+") if p]
        if parts and all(p.startswith("synthetic:") for p in parts):
            kind = "synthetic"
        elif any(p.startswith(("snapshot:", "products[")) for p in parts):
            kind = "products"
        elif parts:
            kind = "folder"
        else:
            kind = "unknown"
        detail = sources
    return {
        "kind": kind,
        "label": KIND_LABELS.get(kind, "unknown"),
        "detail": detail,
        "demo": kind == "synthetic",
    }


def version_training_data(store: Any, version: str) -> dict[str, Any]:
    """`training_data` of a published version (kind "unknown" when its manifest cannot be read)."""
    try:
        return training_data(store.manifest(version).metadata)
    except Exception:  # an unreadable manifest must not break the listing
        return {"kind": "unknown", "label": "unknown", "detail": "", "demo": False}
