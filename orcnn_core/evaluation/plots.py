"""Precision-recall curves of an evaluation (A, V, AV; all and occluded; IoU .50 and .75) as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from orcnn_core.evaluation.amodal_eval import MASK_KINDS, SUBSETS, AmodalEvaluation

PLOT_IOUS = (0.5, 0.75)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCOeval's recThrs


def mean_precision_curve(precision: np.ndarray, iou_thresholds: np.ndarray, iou: float):
    """Category-mean interpolated precision at each COCO recall threshold; None when undefined."""
    per_category = precision[np.isclose(iou_thresholds, iou)][0]  # (R, K)
    defined = per_category[:, per_category[0] > -1]
    return defined.mean(axis=1) if defined.shape[1] else None


def plot_precision_recall(evaluation: AmodalEvaluation, out_dir: Union[str, Path], name: str) -> list[Path]:
    """Write ``{name}_{subset}_pr.png`` for the subsets 'all' and 'occluded'; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for subset in SUBSETS:
        fig, axes = plt.subplots(1, len(PLOT_IOUS), figsize=(5 * len(PLOT_IOUS), 4.2), squeeze=False)
        for ax, iou in zip(axes[0], PLOT_IOUS):
            for kind in MASK_KINDS:
                matching = evaluation.matching[subset, kind]
                curve = mean_precision_curve(matching.precision, matching.iou_thresholds, iou)
                if curve is not None:
                    ap = 100.0 * float(curve.mean())
                    ax.plot(RECALL_THRESHOLDS, curve, label=f"{kind} (AP {ap:.1f})")
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
                   title=f"{subset}, IoU {iou:.2f}")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="lower left")
        fig.suptitle(name)
        fig.tight_layout()
        path = out_dir / f"{name}_{subset}_pr.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written
