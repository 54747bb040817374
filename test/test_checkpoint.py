"""Checkpoints: non-pickle layout, atomic writes, a failed or interrupted save keeps the previous one."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from orcnn_core.engine import checkpoint as ckpt
from orcnn_core.engine.checkpoint import (
    Checkpointer,
    TrainingState,
    atomic_write,
    capture_rng_state,
    load_training_state,
    restore_rng_state,
)
from orcnn_core.errors import WeightsError
from orcnn_core.model import build_model, model_config_from_dict

TINY_MODEL = {"num_classes": 2, "backbone": "mobilenet_v3_fpn", "backbone_width_mult": 0.25, "norm": "batch",
              "fpn_channels": 16, "anchor_sizes": [8, 16, 32, 64], "box_representation_size": 32,
              "mask_head_channels": 8, "mask_roi_size": 7, "min_size": 64, "max_size": 96}


@pytest.fixture(scope="module")
def tiny():
    cfg = model_config_from_dict(TINY_MODEL)
    torch.manual_seed(0)
    return build_model(cfg), cfg


def make_state(model: torch.nn.Module, iteration: int) -> TrainingState:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01 * iteration)
    optimizer.step()
    rng_tensors, rng_scalars = capture_rng_state()
    return TrainingState(iteration=iteration, optimizer=optimizer.state_dict(),
                         scheduler={"last_epoch": iteration}, rng_tensors=rng_tensors,
                         rng_scalars=rng_scalars, extra={"data_position": iteration * 2})


def test_checkpoint_round_trip_without_pickle(tmp_path, tiny):
    model, cfg = tiny
    state = make_state(model, 3)
    prefix = Checkpointer(tmp_path).save("model_0000003", model, cfg, state)
    # Four files, none of them a pickle: safetensors + JSON.
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last_checkpoint", "model_0000003.json", "model_0000003.safetensors",
                     "model_0000003.state.json", "model_0000003.state.safetensors"]
    document = json.loads((tmp_path / "model_0000003.state.json").read_text())
    assert document["iteration"] == 3 and document["extra"]["data_position"] == 6
    loaded = load_training_state(prefix)
    original = state.optimizer["state"]
    assert set(loaded.optimizer["state"]) == set(original)
    for index, values in original.items():
        assert torch.equal(loaded.optimizer["state"][index]["momentum_buffer"], values["momentum_buffer"])
    assert loaded.optimizer["param_groups"][0]["lr"] == 0.1
    weights = load_file(str(tmp_path / "model_0000003.safetensors"))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_rng_state_round_trip():
    tensors, scalars = capture_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    json.loads(json.dumps(scalars))  # JSON-able
    random.random(), np.random.rand(), torch.rand(())  # move every generator on
    restore_rng_state(tensors, scalars)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_failed_weight_save_keeps_previous_checkpoint(tmp_path, tiny, monkeypatch):
    model, cfg = tiny
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save("model_0000002", model, cfg, make_state(model, 2))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    import orcnn_core.model as model_pkg

    def broken_save(model, config, path):
        path.write_bytes(b"half a file")  # a disk-full error in the middle of writing
        raise OSError("No space left on device")

    monkeypatch.setattr(model_pkg, "save_weights", broken_save)
    with pytest.raises(OSError, match="No space"):
        checkpointer.save("model_0000004", model, cfg, make_state(model, 4))
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before, "a failed save changed or added files"
    assert checkpointer.last_checkpoint() == tmp_path / "model_0000002"
    assert load_training_state(tmp_path / "model_0000002").iteration == 2


def test_save_interrupted_mid_write_never_leaves_truncated_file(tmp_path, tiny, monkeypatch):
    model, cfg = tiny
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save("model_0000002", model, cfg, make_state(model, 2))
    good_state = (tmp_path / "model_0000002.state.safetensors").read_bytes()
    real_save_file = ckpt.save_file

    def dies_halfway(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata)
        data = open(filename, "rb").read()
        open(filename, "wb").write(data[: len(data) // 2])
        raise KeyboardInterrupt  # the process is killed while writing

    monkeypatch.setattr(ckpt, "save_file", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000004", model, cfg, make_state(model, 4))
    # The pointer still names the old checkpoint, which loads; nothing of the new one is referenced
    # and no temporary file is left behind.
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000002"
    assert (tmp_path / "model_0000002.state.safetensors").read_bytes() == good_state
    assert load_training_state(tmp_path / "model_0000002").iteration == 2
    assert not list(tmp_path.glob(".*tmp")) and not (tmp_path / "model_0000004.state.safetensors").exists()
    # Overwriting a file in place is atomic too: an error in the middle leaves the old content.
    target = tmp_path / "note.txt"
    target.write_text("old")

    def partial(tmp):
        tmp.write_text("ne")
        raise OSError("boom")

    with pytest.raises(OSError):
        atomic_write(target, partial)
    assert target.read_text() == "old"


def test_pruning_keeps_newest_periodic_and_final(tmp_path, tiny):
    model, cfg = tiny
    checkpointer = Checkpointer(tmp_path, keep=2)
    for it in (2, 4, 6):
        checkpointer.save(f"model_{it:07d}", model, cfg, make_state(model, it))
    checkpointer.save("model_final", model, cfg, make_state(model, 7))
    kept = sorted(p.name for p in tmp_path.glob("*.state.json"))
    assert kept == ["model_0000004.state.json", "model_0000006.state.json", "model_final.state.json"]


def test_corrupt_or_missing_state_is_a_clear_error(tmp_path, tiny):
    model, cfg = tiny
    prefix = Checkpointer(tmp_path).save("model_0000001", model, cfg, make_state(model, 1))
    (tmp_path / "model_0000001.state.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="corrupt"):
        load_training_state(prefix)
    (tmp_path / "model_0000001.state.json").unlink()
    with pytest.raises(WeightsError, match="missing"):
        load_training_state(prefix)
    (tmp_path / "last_checkpoint").write_text("model_0000009\n")
    with pytest.raises(WeightsError, match="model_0000009"):
        Checkpointer(tmp_path).last_checkpoint()


def test_a_new_run_removes_what_a_killed_one_left_half_written(tmp_path, tiny):
    # kill -9 during a save leaves a `.weights-*` folder or a `.NAME.*.tmp` file; nothing else may go.
    (tmp_path / ".weights-abc123").mkdir()
    (tmp_path / ".weights-abc123" / "model_0000003.safetensors").write_bytes(b"half")
    (tmp_path / ".model_0000003.state.json.x1y2.tmp").write_text("{")
    keep = [tmp_path / "notes.txt", tmp_path / "model_0000003.safetensors", tmp_path / "weights.tmp"]
    for path in keep:
        path.write_text("mine")
    ckpt.Checkpointer(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)
