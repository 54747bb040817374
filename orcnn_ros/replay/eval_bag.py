"""``orcnn replay --eval-bag RESULTS_BAG --gt GT.json``: evaluate recorded result messages, no model.

The results bag may come from a replay or be recorded from the live node (``ros2 bag record
/amodal/instances``): the evaluation reads what the planner received.
"""

from __future__ import annotations

from orcnn_core.errors import InputError
from orcnn_core.structures import prediction_to_results
from orcnn_ros import messages
from orcnn_ros.bagio import BagMessage, BagReader
from orcnn_ros.conversions import instance_array_to_graph, instance_array_to_prediction
from orcnn_ros.replay.ground_truth import header_stamp_ns, load_ground_truth
from orcnn_ros.replay.options import EvalBagOptions
from orcnn_ros.replay.report import EvalBagSummary, evaluate, log


def run_eval_bag(opts: EvalBagOptions) -> EvalBagSummary:
    """Evaluate the AmodalInstanceArray messages of ``opts.results_bag`` against ``opts.gt``; no model.

    Message k of the results topic is frame k for ``--gt-key index``/``file``; the header stamp is
    used for ``stamp``.
    """
    opts.validate()
    with BagReader(opts.results_bag) as reader:
        info = reader.topics.get(opts.instances_topic)
        if info is None:
            raise InputError(f"bag {opts.results_bag} has no topic '{opts.instances_topic}' "
                             f"(topics: {', '.join(sorted(reader.topics)) or 'none'}); see --instances-topic")
        if info.msgtype != messages.INSTANCE_ARRAY_TYPE:
            raise InputError(f"bag {opts.results_bag}: topic '{opts.instances_topic}' has type "
                             f"{info.msgtype}, expected {messages.INSTANCE_ARRAY_TYPE}")
        dataset, gt_index = load_ground_truth(opts.gt, opts.gt_key, opts.image_map, opts.results_bag)
        summary = EvalBagSummary(bag=str(opts.results_bag), topic=opts.instances_topic)
        results: list = []
        for m in reader.messages([opts.instances_topic]):
            summary.messages += 1
            try:
                msg = messages.deserialize(bytes(m.data), m.msgtype)
            except InputError as exc:
                gt_index.claim(m.index, None)
                _count_unreadable(summary, m, "malformed_message", str(exc))
                continue
            record = gt_index.claim(m.index, header_stamp_ns(msg.header))
            if record is None:
                continue
            try:
                prediction = instance_array_to_prediction(msg)
                graph = instance_array_to_graph(msg)  # the relations as published, not recomputed
            except InputError as exc:
                _count_unreadable(summary, m, "invalid_instances", str(exc))
                continue
            summary.frames_evaluated += 1
            summary.instances_total += len(prediction)
            results.extend(prediction_to_results(prediction, record.image_id, record.file_name,
                                                 occlusion=graph))
        summary.frames_without_gt = gt_index.unmatched
    summary.evaluation = evaluate(dataset, gt_index, results, str(opts.results_bag), opts.results_json)
    return summary


def _count_unreadable(summary: EvalBagSummary, m: BagMessage, cause: str, message: str) -> None:
    if summary.skipped_by_cause.add(cause):
        log.warning("%s: skipping message %d (receive time %d ns): %s [%s]; further messages with this "
                    "cause are only counted", summary.topic, m.index, m.timestamp, message, cause)
