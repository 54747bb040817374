"""Dataset statistics in the layout of the paper's Table 3 (D2S amodal splits)."""

from __future__ import annotations

from collections import Counter

from orcnn_core.data.records import AmodalAnnotations

# (key, label as the paper prints it); percentages are in [0, 100].
TABLE3_ROWS = (
    ("images", "num imgs"),
    ("images_occluded", "num imgs w/ occl"),
    ("image_occlusion_pct", "img OR [%]"),
    ("instances", "num objs"),
    ("instances_occluded", "num objs occl"),
    ("instance_occlusion_pct", "obj OR [%]"),
    ("mean_occlusion_rate_all_pct", "avg OR / reg (all) [%]"),
    ("mean_occlusion_rate_occluded_pct", "avg OR / reg (occl) [%]"),
    ("categories", "categories"),
    ("instances_per_image", "objs / img"),
)


def dataset_stats(annotations: AmodalAnnotations) -> dict:
    """Table-3 statistics plus category count, objects per image and instances per category."""
    images = len(annotations.images)
    rates = [a.occlusion_rate for r in annotations.images for a in r.annotations]
    occluded = [rate for rate in rates if rate > 0]
    images_occluded = sum(any(a.occlusion_rate > 0 for a in r.annotations) for r in annotations.images)
    names = annotations.category_names()
    per_category = Counter(names.get(a.category_id, str(a.category_id))
                           for r in annotations.images for a in r.annotations)
    return {
        "images": images,
        "images_occluded": images_occluded,
        "image_occlusion_pct": 100.0 * images_occluded / images if images else 0.0,
        "instances": len(rates),
        "instances_occluded": len(occluded),
        "instance_occlusion_pct": 100.0 * len(occluded) / len(rates) if rates else 0.0,
        "mean_occlusion_rate_all_pct": 100.0 * sum(rates) / len(rates) if rates else 0.0,
        "mean_occlusion_rate_occluded_pct": 100.0 * sum(occluded) / len(occluded) if occluded else 0.0,
        "categories": len(annotations.categories),
        "instances_per_image": len(rates) / images if images else 0.0,
        "instances_per_category": dict(sorted(per_category.items())),
    }


def format_stats(stats: dict, title: str = "") -> str:
    """Table-3 style text: one ``label  value`` row per statistic, then instances per category."""
    lines = [title] if title else []
    for key, label in TABLE3_ROWS:
        value = stats[key]
        if key.endswith("_pct"):
            text = f"{value:.1f}"
        else:
            text = f"{value:.2f}" if isinstance(value, float) else str(value)
        lines.append(f"{label:<26}{text:>10}")
    if stats.get("instances_per_category"):
        counts = ", ".join(f"{k} {v}" for k, v in stats["instances_per_category"].items())
        lines.append(f"objs per category: {counts}")
    return "\n".join(lines)
