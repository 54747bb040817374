"""Training engine: exact resume, config errors, NaN stop, missing data, --init-modal class count."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from orcnn_core.cli import main as cli_main
from orcnn_core.engine.config import load_train_config, train_config_from_dict
from orcnn_core.engine.schedule import lr_factor
from orcnn_core.engine.trainer import Trainer, TrainingDivergedError, train
from orcnn_core.errors import ConfigError, DatasetError, WeightsError

# A tiny model on tiny synthetic scenes: one iteration takes a fraction of a second on one core.
TINY = {
    "model": {"num_classes": 2, "class_names": ["box", "disc"], "backbone": "mobilenet_v3_fpn",
              "backbone_width_mult": 0.25, "norm": "batch", "fpn_channels": 16,
              "anchor_sizes": [8, 16, 32, 64],
              "rpn_pre_nms_top_n_train": 100, "rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_train": 50,
              "rpn_post_nms_top_n_test": 20, "rpn_batch_size_per_image": 32, "box_representation_size": 32,
              "box_batch_size_per_image": 16, "mask_head_channels": 8, "mask_roi_size": 7, "min_size": 64,
              "max_size": 96, "detections_per_image": 10},
    "data": {"synthetic": {"images": 6, "val_images": 0, "seed": 1, "classes": 2, "size": [96, 64]}},
    "solver": {"base_lr": 0.01, "warmup_iters": 2, "max_iter": 6, "batch_size": 2, "schedule": "step",
               "steps": [4]},
    "train": {"seed": 3, "eval_period": 0, "checkpoint_period": 3, "log_period": 2, "num_workers": 0},
}


def tiny_config(**sections):
    """TINY with some keys of some sections replaced."""
    data = copy.deepcopy(TINY)
    for section, values in sections.items():
        data[section].update(values)
    return train_config_from_dict(data)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def interrupt_at(monkeypatch, iteration: int) -> None:
    """Make the trainer die (like Ctrl-C) when it reaches ``iteration``."""
    original = Trainer.run_step

    def run_step(self, images, targets):
        if self.iteration == iteration:
            raise KeyboardInterrupt
        return original(self, images, targets)

    monkeypatch.setattr(Trainer, "run_step", run_step)


def test_resume_is_bitwise_identical_to_uninterrupted_run(tmp_path, monkeypatch):
    # Evaluation at iteration 3 happens in the uninterrupted run only before the checkpoint the
    # resumed run starts from; it must not change what either run does next.
    cfg = train_config_from_dict({**copy.deepcopy(TINY),
                                  "data": {"synthetic": {**TINY["data"]["synthetic"], "val_images": 1},
                                           "flip_prob": 0.5},
                                  "train": {**TINY["train"], "eval_period": 3}})
    straight = tmp_path / "straight"
    train(cfg, straight, show_progress=False)

    broken = tmp_path / "broken"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 4)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, broken, show_progress=False)
    assert (broken / "last_checkpoint").read_text().strip() == "model_0000003"
    assert not (broken / "model_final.safetensors").exists()
    train(cfg, broken, resume=True, show_progress=False)

    initial = read_tensors(straight / "model_0000003.safetensors")
    final_a = read_tensors(straight / "model_final.safetensors")
    final_b = read_tensors(broken / "model_final.safetensors")
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key
    assert any(not torch.equal(initial[k], final_a[k]) for k in final_a), "iterations 3-5 changed nothing"
    # The SGD momentum buffers (and every other training-state tensor) agree too.
    state_a = read_tensors(straight / "model_final.state.safetensors")
    state_b = read_tensors(broken / "model_final.state.safetensors")
    momentum = [k for k in state_a if k.endswith("momentum_buffer")]
    assert momentum and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    # Logs and curves of the run.
    lines = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines if "loss_classifier" in r] == [2, 4, 6]
    assert any("eval" in r and "all/AP_AV" in r["eval"] for r in lines)
    assert (straight / "loss_curve.png").stat().st_size > 0
    assert (straight / "best.safetensors").is_file() and (straight / "best.json").is_file()


def test_resume_restores_optimizer_momentum(tmp_path, monkeypatch):
    from orcnn_core.engine.distributed import DistributedContext
    from orcnn_core.engine.trainer import build_train_data
    from orcnn_core.model import build_model

    cfg = tiny_config(solver={"max_iter": 3})
    train(cfg, tmp_path, show_progress=False)
    saved = read_tensors(tmp_path / "model_final.state.safetensors")

    fresh = Trainer(cfg, build_model(cfg.model), build_train_data(cfg), tmp_path, DistributedContext(),
                    torch.device("cpu"), show_progress=False)
    assert fresh.resume()
    assert fresh.start_iter == 3
    params = [p for group in fresh.optimizer.param_groups for p in group["params"]]
    restored = {i: fresh.optimizer.state[p]["momentum_buffer"] for i, p in enumerate(params)
                if "momentum_buffer" in fresh.optimizer.state[p]}
    assert restored, "no momentum buffer restored"
    nonzero = 0
    for index, buffer in restored.items():
        assert torch.equal(buffer, saved[f"optimizer.{index}.momentum_buffer"])
        nonzero += int(buffer.abs().sum() > 0)
    assert nonzero > 0
    # The learning-rate schedule continues where it stopped.
    expected = cfg.solver.base_lr * lr_factor(3, max_iter=3, schedule="step", steps=[4],
                                              warmup_iters=2, warmup_factor=cfg.solver.warmup_factor)
    assert math.isclose(fresh.optimizer.param_groups[0]["lr"], expected)


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    data = copy.deepcopy(TINY)
    data["solver"]["lrr"] = 0.1
    import yaml

    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"solver\.lrr"):
        load_train_config(path)
    data["solver"].pop("lrr")
    data["model"]["fpn_chanels"] = 8
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"model\.fpn_chanels"):
        load_train_config(path)
    # The command line reports it as one line with exit code 2.
    assert cli_main(["train", "--config", str(path), "--out", str(tmp_path / "o")]) == 2


def test_unknown_keys_of_optional_data_splits_are_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.train\.annotation'"):
        train_config_from_dict({**TINY, "data": {"train": {"annotation": "a.json"}}})
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.synthetic\.imgs'"):
        train_config_from_dict({**TINY, "data": {"synthetic": {"imgs": 3}}})
    cfg = train_config_from_dict({**TINY, "data": {"train": {"annotations": "a.json"}, "val": None}})
    assert cfg.data.train.annotations == "a.json" and cfg.data.val is None


def test_bad_values_and_sections_are_config_errors():
    with pytest.raises(ConfigError, match="schedule"):
        tiny_config(solver={"schedule": "linear"})
    with pytest.raises(ConfigError, match=r"solver\.max_iter"):
        tiny_config(solver={"max_iter": 0})
    with pytest.raises(ConfigError, match="data: give either"):
        train_config_from_dict({**TINY, "data": {}})
    with pytest.raises(ConfigError, match="unknown config section 'trian'"):
        train_config_from_dict({**TINY, "trian": {}})


def test_synthetic_class_count_must_match_model(tmp_path):
    cfg = tiny_config(data={"synthetic": {**TINY["data"]["synthetic"], "classes": 3}})
    with pytest.raises(ConfigError, match=r"data\.synthetic\.classes \(3\).*model\.num_classes \(2\)"):
        train(cfg, tmp_path, show_progress=False)


def test_missing_dataset_path_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "train.json"
    data = copy.deepcopy(TINY)
    data["data"] = {"train": {"annotations": str(missing)}}
    cfg = train_config_from_dict(data)
    with pytest.raises(DatasetError, match=str(missing).replace("\\", "\\\\")):
        train(cfg, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out" / "last_checkpoint").exists()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import orcnn_core.model as model_pkg

    real_build = model_pkg.build_model

    def build_poisoned(cfg):
        model = real_build(cfg)
        forward = model.forward
        calls = {"n": 0}

        def poisoned(images, targets=None):
            losses = forward(images, targets)
            if model.training:
                calls["n"] += 1
                if calls["n"] == 5:  # iteration 4 (0-based)
                    losses["loss_amodal_mask"] = losses["loss_amodal_mask"] * float("nan")
            return losses

        model.forward = poisoned
        return model

    monkeypatch.setattr(model_pkg, "build_model", build_poisoned)
    cfg = tiny_config(train={"checkpoint_period": 2})
    with pytest.raises(TrainingDivergedError, match=r"iteration 4.*loss_amodal_mask=nan.*model_0000004"):
        train(cfg, tmp_path, show_progress=False)
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000004"
    assert not (tmp_path / "model_final.safetensors").exists()
    good = read_tensors(tmp_path / "model_0000004.safetensors")
    assert all(torch.isfinite(v).all() for v in good.values() if v.is_floating_point())


def test_init_modal_with_other_class_count_is_an_error(tmp_path):
    from safetensors.torch import save_file

    from orcnn_core.model import build_model

    cfg = tiny_config()
    other_model = {**TINY["model"], "num_classes": 5, "class_names": list("abcde")}
    other = train_config_from_dict({**copy.deepcopy(TINY), "model": other_model})
    modal = build_model(other.model).state_dict()
    # A torchvision-style modal Mask R-CNN state dict made from the 5-class amodal head.
    torchvision_style = {}
    for key, value in modal.items():
        if ".branches.amodal.head." in key:
            torchvision_style["roi_heads.mask_head." + key.split(".head.", 1)[1]] = value
        elif ".branches.amodal.predictor." in key:
            torchvision_style["roi_heads.mask_predictor." + key.split(".predictor.", 1)[1]] = value
    assert torchvision_style, "mask head keys not found; the model layout changed"
    path = tmp_path / "modal.safetensors"
    save_file({k: v.contiguous() for k, v in torchvision_style.items()}, str(path))
    with pytest.raises(WeightsError, match=r"--init-modal .*num_classes = 2"):
        train(cfg, tmp_path / "out", init_modal=path, show_progress=False)
    with pytest.raises(WeightsError, match="not found"):
        train(cfg, tmp_path / "out", init_modal=tmp_path / "missing.safetensors", show_progress=False)


def test_lr_schedule_warmup_step_and_cosine():
    # Warm-up ramps linearly from warmup_factor to 1; steps multiply by gamma; cosine ends at 0.
    assert lr_factor(0, max_iter=100, schedule="step", steps=[50], warmup_iters=10, warmup_factor=0.1) == 0.1
    assert math.isclose(lr_factor(5, max_iter=100, schedule="step", steps=[50], warmup_iters=10,
                                  warmup_factor=0.1), 0.55)
    assert lr_factor(49, max_iter=100, schedule="step", steps=[50]) == 1.0
    assert math.isclose(lr_factor(50, max_iter=100, schedule="step", steps=[50], gamma=0.1), 0.1)
    assert math.isclose(lr_factor(50, max_iter=100, schedule="cosine"), 0.5)
    assert lr_factor(100, max_iter=100, schedule="cosine") < 1e-12
    assert np.all(np.diff([lr_factor(i, max_iter=100, schedule="cosine") for i in range(100)]) <= 0)


def test_ranks_draw_different_samples_and_together_cover_each_epoch():
    # The DDP test checks that ranks stay in sync, not that they see different data: each rank of
    # an iteration must get its own samples, and all ranks together every sample once per epoch.
    from orcnn_core.engine.train_data import ResumableSampler

    size, batch, world, iterations = 12, 2, 3, 2  # 2 iterations x 3 ranks x 2 images = one epoch
    streams = []
    for rank in range(world):
        sampler = iter(ResumableSampler(size, batch, seed=5, rank=rank, world_size=world))
        streams.append([next(sampler) for _ in range(iterations * batch)])
    for iteration in range(iterations):
        per_rank = [set(s[iteration * batch:(iteration + 1) * batch]) for s in streams]
        assert all(len(a & b) == 0 for i, a in enumerate(per_rank) for b in per_rank[i + 1:])
    assert sorted(index for s in streams for index in s) == list(range(size))
