"""A replay killed with SIGKILL keeps what it wrote, and ``--resume`` finishes the same bag."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orcnn_core.data.synth import synthesize
from orcnn_ros import messages
from orcnn_ros.bag_from_images import images_to_bag
from orcnn_ros.bagio import BagReader, last_written
from orcnn_ros.replay import main as replay_main

REPO = Path(__file__).resolve().parents[1]
START_NS = 1_700_000_000_000_000_000
FRAMES = 60


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 60-frame bag of small synthetic scenes and tiny random weights (fast, deterministic)."""
    import torch

    from orcnn_core.model import ModelConfig, build_model, save_weights

    root = tmp_path_factory.mktemp("resume")
    data = synthesize(root / "synth", images=FRAMES, seed=11, classes=3, size=(96, 72))
    bag = root / "in"
    images_to_bag(data.image_root, bag, start_ns=START_NS, rate_hz=20)
    torch.manual_seed(0)
    config = ModelConfig(num_classes=3, backbone="resnet18_fpn", norm="group", fpn_channels=16,
                         box_representation_size=32, mask_head_channels=8, mask_roi_size=7, min_size=72,
                         max_size=96, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                         detections_per_image=8)
    weights = root / "tiny.safetensors"
    save_weights(build_model(config), config, weights)
    return bag, weights


def replay_command(bag: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orcnn_ros.replay", str(bag), "--topic", "/image", "--out", str(out),
            "--weights", str(weights), "--device", "cpu", "--batch-size", "1", "--score-threshold", "0.1",
            "--no-progress", *extra]


def results_by_stamp(bag: Path) -> dict[int, bytes]:
    with BagReader(bag) as reader:
        found = [(m.timestamp, bytes(m.data)) for m in reader.messages(["/amodal/instances"])]
    stamps = [t for t, _ in found]
    assert len(stamps) == len(set(stamps)), "a frame was written twice"
    return dict(found)


def test_sigkill_keeps_the_frames_written_and_resume_finishes_the_bag(setup, tmp_path):
    bag, weights = setup
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    reference = tmp_path / "reference"
    assert replay_main(replay_command(bag, reference, weights)[3:]) == 0  # in process: the same run
    expected = results_by_stamp(reference)
    assert len(expected) == FRAMES

    out = tmp_path / "killed"
    process = subprocess.Popen(replay_command(bag, out, weights), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    written_at_kill = 0
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            if (out / "metadata.yaml").exists():
                count = last_written(out, "/amodal/instances").count
                if count >= 12:  # well into the run (its output already checkpointed): kill it
                    written_at_kill = count
                    process.send_signal(signal.SIGKILL)
                    break
        process.wait(30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    kept = results_by_stamp(out)  # the killed bag opens and reads
    assert len(kept) >= written_at_kill >= 12
    assert all(kept[t] == expected[t] for t in kept)  # the frames it holds are whole and right

    finished = subprocess.run(replay_command(bag, out, weights, "--resume"), env=env, capture_output=True,
                              text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert "already in the resumed bag" in finished.stdout
    assert results_by_stamp(out) == expected  # every frame once, identical to an uninterrupted run
    with BagReader(out) as reader:
        assert reader.topics["/amodal/instances"].msgtype == messages.INSTANCE_ARRAY_TYPE


@pytest.mark.parametrize("extra, words", [
    (["--resume"], "nothing to resume"),
    (["--resume", "--overwrite"], "give one of them"),
    (["--resume", "--gt", "gt.json"], "--eval-bag"),
])
def test_resume_refuses_what_it_cannot_do(setup, tmp_path, capsys, extra, words):
    bag, weights = setup
    assert replay_main(replay_command(bag, tmp_path / "missing", weights, *extra)[3:]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
