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
