"""Amodal evaluation (paper sec. 3.3): AP_AV, AP_A, AP_V for all and occluded ground truth, AP_IV@0.5."""

from orcnn_core.evaluation.amodal_eval import (
    AmodalEvaluation,
    AmodalEvaluator,
    compute_files,
    evaluate_files,
)
from orcnn_core.evaluation.results import ResultsError, load_results, parse_results
from orcnn_core.evaluation.table import format_table

__all__ = [
    "AmodalEvaluation",
    "AmodalEvaluator",
    "ResultsError",
    "compute_files",
    "evaluate_files",
    "format_table",
    "load_results",
    "parse_results",
]
