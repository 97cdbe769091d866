"""The bundle's human-readable report: report.md, a confusion-matrix PNG and training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("n", "accuracy", "weighted_f1", "macro_f1", "top3", "top5", "set_coverage", "set_mean_size")
SET_COLUMNS = (
    "coverage",
    "mean_size",
    "singleton_rate",
    "singleton_coverage",
    "min_class_coverage",
    "classes_under_target",
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def set_lines(metrics: dict[str, Any], alpha: float) -> list[str]:
    """The suggestion-set table: each model kind under each calibration, on the test split."""
    lines = [
        "## Suggestion sets: marginal and class-conditional (Mondrian) calibration",
        "",
        f"Both calibrations from the same calibration split, scored on the test split; "
        f"`min_class_coverage` is the lowest coverage of a class (with its code), "
        f"`classes_under_target` how many classes are covered less than {1 - alpha:.0%}, "
        "`by size` the coverage of the sets of each size (sets in the bin). A class with too few "
        "calibration products for a threshold of its own uses the marginal one.",
        "",
        "| model | calibration | " + " | ".join(SET_COLUMNS) + " | by size |",
        "| --- | --- | " + " | ".join("---" for _ in SET_COLUMNS) + " | --- |",
    ]
    for kind, figures in metrics.items():
        sets = figures.get("sets") if isinstance(figures, dict) else None
        for name in ("marginal", "mondrian"):
            report = (sets or {}).get(name)
            if not report or not report.get("n"):
                continue
            cells = [_fmt(report.get(c)) for c in SET_COLUMNS]
            cells[4] += f" ({report.get('min_class')})"
            by_size = ", ".join(f"{b['sizes']}: {b['coverage']:.2f} ({b['n']})" for b in report["by_size"])
            served = " (served)" if sets.get("served") == name else ""
            lines.append(f"| {kind} | {name}{served} | " + " | ".join(cells) + f" | {by_size} |")
    return [*lines, ""]


def plot_confusions(path: Path, labels: list[int], confusions: dict[str, np.ndarray]) -> None:
    """One row-normalised confusion matrix per model kind, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(confusions), figsize=(7 * len(confusions), 7), squeeze=False)
    for ax, (kind, matrix) in zip(axes[0], confusions.items(), strict=True):
        rows = matrix.sum(axis=1, keepdims=True)
        normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
        ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{kind} (test, n={int(matrix.sum())})")
        ax.set_xticks(range(len(labels)), [str(c) for c in labels], rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), [str(c) for c in labels], fontsize=6)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_histories(path: Path, histories: dict[str, dict[str, list[float]]]) -> None:
    """Loss and accuracy per epoch of each model (training and validation); a second phase
    (`finetune_*`: the image backbone's fine-tuning) continues after the first one's epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(histories), figsize=(5 * len(histories), 7), squeeze=False)
    for col, (kind, history) in enumerate(histories.items()):
        for row, metric in enumerate(("loss", "accuracy")):
            ax = axes[row][col]
            first = len(history.get(metric) or [])
            for key in (metric, f"val_{metric}", f"finetune_{metric}", f"finetune_val_{metric}"):
                values = history.get(key) or []
                start = first if key.startswith("finetune_") else 0
                if values:
                    ax.plot(range(start + 1, start + len(values) + 1), values, label=key)
            ax.set_title(f"{kind} {metric}")
            ax.set_xlabel("epoch")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def image_model(hp: dict[str, Any]) -> str:
    """What the image model is, from metadata.json's hyperparameters (older bundles: a CNN)."""
    arch = hp.get("image_arch", "cnn")
    if arch == "cnn":
        return "CNN"
    tuned = {"head": "its head convolution fine-tuned", "block": "its last block and head fine-tuned"}
    return f"EfficientNet-{arch.capitalize()} (ImageNet weights, {tuned.get(hp.get('image_finetune') or '', 'frozen')})"


def write_report(
    out_dir: Path,
    metadata: dict[str, Any],
    metrics: dict[str, Any],
    confusions: dict[str, np.ndarray],
    histories: dict[str, dict[str, list[float]]],
) -> None:
    """Write report.md, confusion_matrix.png and training_curves.png into `out_dir`.

    Args:
        out_dir: The bundle directory being written.
        metadata: The bundle's metadata.
        metrics: The test-split figures per model kind (evaluate schema).
        confusions: Test-split confusion matrices per model kind.
        histories: Keras training histories per model kind.
    """
    out_dir = Path(out_dir)
    labels = [int(c) for c in metadata["labels"]]
    plot_confusions(out_dir / "confusion_matrix.png", labels, confusions)
    plot_histories(out_dir / "training_curves.png", histories)

    hp = metadata.get("hyperparameters", {})
    refit = metadata.get("refit")
    lines = [
        f"# Model bundle {metadata['version']}",
        "",
        f"Created {metadata['created_at']} from data `{metadata['data_fingerprint'][:12]}` "
        f"(code `{str(metadata['code_revision'])[:12]}`); quick: {metadata.get('quick')}; "
        f"trained in {metadata.get('training_seconds', '?')} s.",
        "",
        f"Text model: `{hp.get('text_arch')}`; image model: {image_model(hp)} at {metadata['image_size']} px; "
        f"fusion: `{hp.get('fusion_arch')}`.",
        "",
        "## Splits (by product id)",
        "",
        "| split | products | with text | with image | with both |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, counts in metadata.get("counts", {}).items():
        lines.append(
            f"| {name} | {counts['products']} | {counts['text']} | {counts['image']} | {counts['both']} |"
        )
    lines += [
        "",
        "## Test-split figures",
        "",
        "Each model on the test products that have its inputs"
        + (
            ": the selection run's models, trained on the train split only; the bundle ships "
            f"models refitted on {' + '.join(refit['splits'])} ({refit['products']} products) with "
            "the epochs selected ("
            + ", ".join(f"{kind} {n}" for kind, n in refit["epochs"].items())
            + f") and {refit['fusion']}, calibrated on the "
            "calibration split, which no model trained on."
            if refit
            else "."
        ),
        "",
        "| model | " + " | ".join(COLUMNS) + " |",
        "| --- | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for kind, figures in metrics.items():
        lines.append(f"| {kind} | " + " | ".join(_fmt(figures.get(c)) for c in COLUMNS) + " |")
    pairs = metadata.get("test_pairs")
    if pairs:
        lines += [
            "",
            f"On the {pairs['n']} test products with both inputs, accuracy: text "
            f"{_fmt(pairs['text_accuracy'])}, image {_fmt(pairs['image_accuracy'])}, "
            f"fusion {_fmt(pairs['fusion_accuracy'])}.",
        ]
    lines += [
        "",
        f"Suggestion sets: split conformal prediction (`{hp.get('conformal_method', 'lac')}` score), "
        f"calibrated for {1 - float(hp.get('alpha', 0.05)):.0%} coverage on the calibration split "
        "(the fusion model on its real pairs plus same-class pseudo pairs); `set_coverage` is "
        "measured on the test split.",
        "",
        *set_lines(metrics, float(hp.get("alpha", 0.05))),
        "![confusion matrices](confusion_matrix.png)",
        "",
        "![training curves](training_curves.png)",
        "",
        "## Hyperparameters",
        "",
        "```",
        *[f"{k}: {v}" for k, v in hp.items()],
        "```",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
