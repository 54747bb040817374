"""Text table of evaluation summaries in the layout of the paper's Tables 2 and 4."""

from __future__ import annotations

from typing import Optional

GROUPS = (
    ("all", (("all", "AP_AV"), ("all", "AP_A"), ("all", "AP_V"))),
    ("occluded", (("occluded", "AP_AV"), ("occluded", "AP_A"), ("occluded", "AP_V"))),
    ("", ((None, "AP_IV50"),)),
    ("", ((None, "AP_IV50_diff"),)),
)
HEADERS = {"AP_IV50": "AP_IV@0.5", "AP_IV50_diff": "AP_IV@0.5 diff"}
SEPARATOR = " | "


def _cell(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(rows: list[tuple[str, dict]]) -> str:
    """One line per (name, summary) with all: AP_AV AP_A AP_V | occluded: ... | AP_IV@0.5 | diff."""
    name_width = max([len("model")] + [len(name) for name, _ in rows])
    group_texts, header_texts, row_texts = [], [], [[] for _ in rows]
    for group, columns in GROUPS:
        widths = [max(5, len(HEADERS.get(key, key))) for _, key in columns]
        header_texts.append(" ".join(HEADERS.get(key, key).rjust(w) for (_, key), w in zip(columns, widths)))
        group_width = sum(widths) + len(widths) - 1
        group_texts.append(group.center(group_width) if group else " " * group_width)
        for r, (_, summary) in enumerate(rows):
            values = [(summary.get(subset) or {}).get(key) if subset else summary.get(key)
                      for subset, key in columns]
            row_texts[r].append(" ".join(_cell(v).rjust(w) for v, w in zip(values, widths)))
    lines = [" " * name_width + SEPARATOR + SEPARATOR.join(group_texts),
             "model".ljust(name_width) + SEPARATOR + SEPARATOR.join(header_texts)]
    lines.append("-" * len(lines[1]))
    for (name, _), cells in zip(rows, row_texts):
        lines.append(name.ljust(name_width) + SEPARATOR + SEPARATOR.join(cells))
    return "\n".join(line.rstrip() for line in lines)


ORDER_COLUMNS = (
    ("cycles%", "cycle_images", True), ("edge P", "edge_precision", False), ("edge R", "edge_recall", False),
    ("edge F1", "edge_f1", False), ("order acc%", "order_accuracy", True), ("dup%", "duplicate_rate", True),
    ("safe 1st%", "first_pick_safety", True), ("false clear%", "false_all_clear", True),
)
ORACLE_KEYS = ("cycle_images", "first_pick_safety", "false_all_clear")


def _order_cell(value: Optional[float], percent: bool) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if percent else f"{value / 100.0:.2f}"


def format_order_table(rows: list[tuple[str, dict]]) -> str:
    """Occlusion-order metrics, one line per (name, order summary), then the ground-truth oracle.

    Edge precision / recall / F1 as fractions, the rest in percent; the oracle line shows what the
    ground truth itself scores on the measures that are not trivially perfect for it.
    """
    name_width = max([len("order"), len("ground-truth oracle")] + [len(name) for name, _ in rows])
    widths = [max(6, len(header)) for header, _, _ in ORDER_COLUMNS]
    header = "order".ljust(name_width) + SEPARATOR + " ".join(
        h.rjust(w) for (h, _, _), w in zip(ORDER_COLUMNS, widths))
    lines = [header, "-" * len(header)]
    for name, summary in rows:
        cells = [_order_cell(summary.get(key), percent).rjust(w)
                 for (_, key, percent), w in zip(ORDER_COLUMNS, widths)]
        lines.append(name.ljust(name_width) + SEPARATOR + " ".join(cells))
    if rows:
        oracle = rows[0][1].get("oracle", {})
        cells = [(_order_cell(oracle.get(key), percent) if key in ORACLE_KEYS else "").rjust(w)
                 for (_, key, percent), w in zip(ORDER_COLUMNS, widths)]
        lines.append("ground-truth oracle".ljust(name_width) + SEPARATOR + " ".join(cells))
    return "\n".join(line.rstrip() for line in lines)
