"""What a replay run (or ``--eval-bag``) reports: counts, latency and occlusion statistics, the metrics."""

from __future__ import annotations

import collections
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from orcnn_core.errors import CauseCounter
from orcnn_core.fileio import atomic_write_text

log = logging.getLogger("orcnn-replay")
# The order metrics score what a planner receives at the node's default threshold (orcnn eval's default).
ORDER_SCORE_THRESHOLD = 0.5


@dataclass
class ReplaySummary:
    """Counts and statistics of one run; ``format()`` is what ``orcnn-replay`` prints."""

    bag: str
    topic: str
    out: str
    frames_in_topic: int = 0
    frames_selected: int = 0
    frames_processed: int = 0
    frames_resumed: int = 0      # frames a resumed run found already processed in the output bag
    skipped_by_cause: CauseCounter = field(default_factory=CauseCounter)
    skipped_frames: list = field(default_factory=list)  # {index, stamp_ns, cause, message}
    latencies_ms: list = field(default_factory=list)
    instances_per_frame: list = field(default_factory=list)
    occlusion_rates: list = field(default_factory=list)     # one per instance
    occluder_counts: list = field(default_factory=list)     # one per occluded instance
    written: collections.Counter = field(default_factory=collections.Counter)
    wall_seconds: float = 0.0
    interrupted: bool = False
    frames_without_gt: int = 0
    evaluation: Optional[dict] = None
    depth: bool = False              # the run paired frames with depth (--depth-topic)
    frames_with_3d: int = 0
    no_3d_by_cause: CauseCounter = field(default_factory=CauseCounter)  # processed frames without 3D

    @property
    def frames_skipped(self) -> int:
        return sum(self.skipped_by_cause.values())

    def skip(self, msg: Any, cause: str, message: str) -> None:
        """Record a skipped frame (a ``BagMessage``); the first of each cause is logged, the rest counted."""
        self.skipped_frames.append({"index": msg.index, "stamp_ns": msg.timestamp,
                                    "cause": cause, "message": message})
        if self.skipped_by_cause.add(cause):
            log.warning("%s: skipping frame %d (receive time %d ns): %s [%s]; further frames with this "
                        "cause are only counted", self.topic, msg.index, msg.timestamp, message, cause)

    def stats(self) -> dict:
        """The derived figures: latency, instances per frame, occlusion statistics."""
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        inst = np.asarray(self.instances_per_frame, dtype=np.float64)
        rates = np.asarray(self.occlusion_rates, dtype=np.float64)
        return {
            "latency_mean_ms": float(lat.mean()) if lat.size else None,
            "latency_p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
            "frames_per_second": self.frames_processed / self.wall_seconds if self.wall_seconds else None,
            "instances_total": int(inst.sum()),
            "instances_per_frame": float(inst.mean()) if inst.size else None,
            "mean_occlusion_rate": float(rates.mean()) if rates.size else None,
            "occluded_fraction": float((rates > 0).mean()) if rates.size else None,
            "occluders_per_occluded": (float(np.mean(self.occluder_counts))
                                       if self.occluder_counts else None),
        }

    def to_dict(self) -> dict:
        """JSON-ready form (for --summary-json)."""
        return {"bag": self.bag, "topic": self.topic, "out": self.out,
                "frames_in_topic": self.frames_in_topic, "frames_selected": self.frames_selected,
                "frames_processed": self.frames_processed, "frames_resumed": self.frames_resumed,
                "frames_skipped": self.frames_skipped,
                "skipped_by_cause": dict(self.skipped_by_cause), "skipped_frames": self.skipped_frames,
                "written": dict(self.written), "interrupted": self.interrupted,
                "wall_seconds": self.wall_seconds, "frames_without_gt": self.frames_without_gt,
                **({"frames_with_3d": self.frames_with_3d, "no_3d_by_cause": dict(self.no_3d_by_cause)}
                   if self.depth else {}),
                **self.stats(), "evaluation": self.evaluation}

    def format(self) -> str:
        """Human-readable summary lines."""
        s = self.stats()

        def num(value: Optional[float], fmt: str = ".2f", scale: float = 1.0) -> str:
            return "-" if value is None else format(value * scale, fmt)

        state = "INTERRUPTED" if self.interrupted else "done"
        written = ", ".join(f"{t} {n}" for t, n in sorted(self.written.items())) or "nothing"
        lines = [f"replay {state}: {self.bag} {self.topic} -> {self.out}",
                 f"  frames: {self.frames_in_topic} in topic, {self.frames_selected} selected, "
                 f"{self.frames_processed} processed, {self.frames_skipped} skipped"
                 + (f", {self.frames_resumed} already in the resumed bag" if self.frames_resumed else "")]
        if self.skipped_by_cause:
            causes = ", ".join(f"{cause} {n}" for cause, n in sorted(self.skipped_by_cause.items()))
            lines.append(f"  skipped by cause: {causes}")
        lines += [f"  latency per frame: mean {num(s['latency_mean_ms'], '.1f')} ms, "
                  f"p95 {num(s['latency_p95_ms'], '.1f')} ms; {num(s['frames_per_second'])} frames/s",
                  f"  instances per frame: {num(s['instances_per_frame'])} ({s['instances_total']} in all)",
                  f"  occlusion: mean occlusion rate {num(s['mean_occlusion_rate'], '.3f')}, "
                  f"occluded instances {num(s['occluded_fraction'], '.1f', 100.0)}%, "
                  f"occluders per occluded instance {num(s['occluders_per_occluded'])}",
                  f"  written: {written}"]
        if self.depth:
            causes = ", ".join(f"{cause} {n}" for cause, n in sorted(self.no_3d_by_cause.items()))
            lines.insert(-1, f"  3D: {self.frames_with_3d} frame(s) with depth"
                             + (f"; without 3D by cause: {causes}" if causes else ""))
        if self.frames_without_gt:
            lines.append(f"  frames without ground truth (not evaluated): {self.frames_without_gt}")
        return "\n".join(lines)



@dataclass
class EvalBagSummary:
    """Counts of one ``--eval-bag`` run and its metrics; ``format()`` is what is printed."""

    bag: str
    topic: str
    messages: int = 0
    frames_evaluated: int = 0       # messages whose ground-truth image they were the first to claim
    frames_without_gt: int = 0
    instances_total: int = 0
    skipped_by_cause: CauseCounter = field(default_factory=CauseCounter)
    evaluation: Optional[dict] = None

    def to_dict(self) -> dict:
        """JSON-ready form (for --summary-json)."""
        return {"bag": self.bag, "topic": self.topic, "messages": self.messages,
                "frames_evaluated": self.frames_evaluated, "frames_without_gt": self.frames_without_gt,
                "instances_total": self.instances_total, "skipped_by_cause": dict(self.skipped_by_cause),
                "evaluation": self.evaluation}

    def format(self) -> str:
        """Human-readable summary lines."""
        lines = [f"eval-bag: {self.bag} {self.topic}: {self.messages} result messages, "
                 f"{self.frames_evaluated} evaluated, {self.instances_total} instances"]
        if self.skipped_by_cause:
            causes = ", ".join(f"{cause} {n}" for cause, n in sorted(self.skipped_by_cause.items()))
            lines.append(f"  unreadable messages (their images count as misses): {causes}")
        if self.frames_without_gt:
            lines.append(f"  messages without ground truth (not evaluated): {self.frames_without_gt}")
        return "\n".join(lines)



def evaluate(dataset: Any, gt_index: Any, results: list, source: str,
             results_json: Optional[Path],
             order_score_threshold: float = ORDER_SCORE_THRESHOLD) -> Optional[dict]:
    """The paper's metrics and the occlusion-order metrics (under ``"order"``) over the ground-truth
    images the frames claimed (frames without results count as misses), as ``orcnn eval`` computes
    them from the published graph fields of ``results``."""
    from orcnn_core.evaluation import AmodalEvaluator
    from orcnn_core.evaluation.order_eval import evaluate_order

    images = [r for r in dataset.images if r.image_id in gt_index.seen]
    if results_json:
        atomic_write_text(results_json, json.dumps(results) + "\n")
    if not images:
        log.warning("no frame matched the ground truth (--gt-key %s); nothing to evaluate", gt_index.key)
        return None
    summary = AmodalEvaluator(images, dataset.categories).evaluate(results, source=source)
    summary["order"] = evaluate_order(images, dataset.categories, results, source,
                                      score_threshold=order_score_threshold)
    return summary


def print_report(summary: Union[ReplaySummary, EvalBagSummary]) -> None:
    """Print the summary and, with ground truth, the Table-2 row, the order metrics and the notes."""
    print(summary.format())
    if summary.evaluation is not None:
        from orcnn_core.evaluation.table import format_order_table, format_table

        name = Path(summary.bag).name or summary.bag
        print(format_table([(name, summary.evaluation)]))
        print()
        print(format_order_table([(name, summary.evaluation["order"])]))
        for note in summary.evaluation.get("notes", []) + summary.evaluation["order"].get("notes", []):
            print(f"note: {note}")


def write_summary(summary: Union[ReplaySummary, EvalBagSummary], path: Optional[Path]) -> None:
    """Write the summary as JSON (``--summary-json``), replacing the file atomically."""
    if path:
        atomic_write_text(path, json.dumps(summary.to_dict(), indent=2) + "\n")
