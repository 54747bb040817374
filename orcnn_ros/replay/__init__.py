"""Offline replay of rosbag2 files through the model, and evaluation of recorded results bags.

One job per module: ``options`` (the options, declared once), ``ground_truth`` (which ground-truth
image a frame shows), ``run`` (the replay loop), ``eval_bag`` (``--eval-bag``), ``report`` (summary,
metrics, printing), ``cli`` (``orcnn replay`` and its alias ``orcnn-replay``).
"""

from orcnn_ros.replay.cli import main
from orcnn_ros.replay.eval_bag import run_eval_bag
from orcnn_ros.replay.ground_truth import GroundTruthIndex
from orcnn_ros.replay.options import INSTANCES_TOPIC, OVERLAY_TOPIC, EvalBagOptions, ReplayOptions
from orcnn_ros.replay.report import EvalBagSummary, ReplaySummary
from orcnn_ros.replay.run import run_replay

__all__ = ["EvalBagOptions", "EvalBagSummary", "GroundTruthIndex", "INSTANCES_TOPIC", "OVERLAY_TOPIC",
           "ReplayOptions", "ReplaySummary", "main", "run_eval_bag", "run_replay"]
