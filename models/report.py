"""The bundle's human-readable report: report.md, a confusion-matrix PNG and training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_report(
    out_dir: Path,
    metadata: dict[str, Any],
    metrics: dict[str, Any],
    confusions: dict[str, np.ndarray],
    histories: dict[str, dict[str, list[float]]],
) -> None:
    """Write report.md, confusion_matrix.png and training_curves.png into `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = metadata["labels"]
    fig, axes = plt.subplots(1, 3, figsize=(21, 7))
    for ax, (kind, matrix) in zip(axes, confusions.items(), strict=False):
        rows = matrix.sum(axis=1, keepdims=True)
        ax.imshow(
            np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0), cmap="Blues"
        )
        ax.set_title(f"{kind} (n={int(matrix.sum())})")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrix.png", dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (kind, history) in zip(axes, histories.items(), strict=False):
        for key, values in history.items():
            if values:
                ax.plot(range(1, len(values) + 1), values, label=key)
        ax.set_title(kind)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "training_curves.png", dpi=80)
    plt.close(fig)

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    columns = ["n", "accuracy", "weighted_f1", "macro_f1", "top3", "top5", "set_coverage", "set_mean_size"]
    lines = [
        f"# Model bundle {metadata['version']}",
        "",
        f"Created {metadata['created_at']} from data {metadata['data_fingerprint'][:12]} "
        f"(code {metadata['code_revision'][:12]}); quick: {metadata['quick']}; "
        f"trained in {metadata['training_seconds']} s.",
        "",
        f"Split sizes: {metadata['counts']}.",
        "",
        "## Test-split figures",
        "",
        "| model | " + " | ".join(columns) + " |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for kind, figures in metrics.items():
        lines.append(f"| {kind} | " + " | ".join(fmt(figures.get(c)) for c in columns) + " |")
    lines += [
        "",
        "Suggestion sets: split conformal prediction (LAC score) calibrated for 95% coverage on a "
        "held-out calibration split; `set_coverage` is measured on the test split.",
        "",
        "![confusion matrices](confusion_matrix.png)",
        "",
        "![training curves](training_curves.png)",
        "",
        "## Hyperparameters",
        "",
        "```",
        *[f"{k}: {v}" for k, v in metadata["hyperparameters"].items()],
        "```",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
