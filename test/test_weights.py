"""Weights I/O: safetensors + JSON sidecar round trip, clear errors, modal mask-head initialisation."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from orcnn_core.errors import WeightsError
from orcnn_core.model import (
    build_model,
    init_mask_heads_from_modal,
    load_weights,
    save_weights,
    tiny_config,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny ORCNN saved once: (path, model, config)."""
    torch.manual_seed(0)
    cfg = tiny_config(class_names=["cup", "box"], category_ids=[5, 9])
    model = build_model(cfg).eval()
    path = save_weights(model, cfg, tmp_path_factory.mktemp("w") / "orcnn_tiny")
    return path, model, cfg


def _outputs(model):
    torch.manual_seed(3)
    with torch.no_grad():
        return model([torch.rand(3, 64, 64)])[0]


@pytest.mark.parametrize("variant", ["orcnn", "merged"])
def test_save_then_load_gives_identical_outputs(tmp_path, variant):
    torch.manual_seed(0)
    cfg = tiny_config(variant=variant)
    model = build_model(cfg).eval()
    path = save_weights(model, cfg, tmp_path / "model.safetensors")
    assert path.name == "model.safetensors" and (tmp_path / "model.json").is_file()
    loaded, loaded_cfg = load_weights(tmp_path / "model")
    assert loaded_cfg == cfg and not loaded.training
    before, after = _outputs(model), _outputs(loaded)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_sidecar_holds_format_version_and_model_config(saved):
    path, _, _ = saved
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["format_version"] == 1
    assert sidecar["model"]["variant"] == "orcnn"
    assert sidecar["model"]["class_names"] == ["cup", "box"] and sidecar["model"]["category_ids"] == [5, 9]


def test_loading_weights_of_another_variant_or_class_count_names_both(saved):
    path, _, cfg = saved
    with pytest.raises(WeightsError, match=r"variant='orcnn'.*variant='mrcnn'"):
        load_weights(path, expected=tiny_config(variant="mrcnn"))
    with pytest.raises(WeightsError, match=r"num_classes=2.*num_classes=4"):
        load_weights(path, expected=tiny_config(num_classes=4))
    model, _ = load_weights(path, expected=cfg)
    assert model is not None


def _copy(saved, tmp_path, name="copy"):
    path, _, _ = saved
    target = tmp_path / f"{name}.safetensors"
    target.write_bytes(path.read_bytes())
    target.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    return target


def test_missing_and_corrupt_files_are_clear_errors(saved, tmp_path):
    with pytest.raises(WeightsError, match="sidecar not found.*nothing.json"):
        load_weights(tmp_path / "nothing")
    target = _copy(saved, tmp_path)
    target.unlink()
    with pytest.raises(WeightsError, match="weights file not found.*copy.safetensors"):
        load_weights(target)

    target = _copy(saved, tmp_path)
    target.write_bytes(target.read_bytes()[:1000])  # truncated download
    with pytest.raises(WeightsError, match="cannot read weights file .*copy.safetensors"):
        load_weights(target)

    target = _copy(saved, tmp_path)
    target.with_suffix(".json").write_text("{not json")
    with pytest.raises(WeightsError, match="copy.json is not valid JSON"):
        load_weights(target)


def test_nan_weights_name_the_tensor(saved, tmp_path):
    target = _copy(saved, tmp_path)
    state = load_file(str(target))
    key = "roi_heads.mask_heads.branches.visible.head.1.0.weight"
    state[key][0, 0, 0, 0] = float("nan")
    save_file(state, str(target))
    with pytest.raises(WeightsError, match=rf"copy.safetensors: tensor '{key}' holds NaN"):
        load_weights(target)


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_keys_that_do_not_fit_the_model_are_errors(saved, tmp_path, change):
    target = _copy(saved, tmp_path)
    state = load_file(str(target))
    key = "roi_heads.box_predictor.cls_score.weight"
    if change == "missing":
        del state[key]
    elif change == "unexpected":
        state["roi_heads.extra_head.weight"] = torch.zeros(2)
    else:
        state[key] = torch.zeros(5, state[key].shape[1])
    save_file(state, str(target))
    pattern = {"missing": "1 missing keys.*cls_score", "unexpected": "1 unexpected keys.*extra_head",
               "shape": r"cls_score.weight' has shape \(5, 32\).*\(3, 32\)"}[change]
    with pytest.raises(WeightsError, match=rf"copy.safetensors.*{pattern}"):
        load_weights(target)


def _modal_maskrcnn(num_classes: int) -> MaskRCNN:
    """A tiny torchvision Mask R-CNN whose mask head fits the tiny config (16 in, 8 wide)."""
    backbone = nn.Conv2d(3, 16, 3, padding=1)
    backbone.out_channels = 16
    return MaskRCNN(backbone, num_classes=None, box_predictor=FastRCNNPredictor(1024, num_classes),
                    mask_head=MaskRCNNHeads(16, [8] * 4, 1),
                    mask_predictor=MaskRCNNPredictor(8, 8, num_classes))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_both_mask_heads_initialise_from_one_modal_mask_head(tmp_path, suffix):
    torch.manual_seed(0)
    modal = _modal_maskrcnn(num_classes=3)
    state = {k: v.contiguous() for k, v in modal.state_dict().items()}
    path = tmp_path / f"modal{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = build_model(tiny_config())
    report = init_mask_heads_from_modal(model, path)
    branches = model.roi_heads.mask_heads.branches
    for kind in ("amodal", "visible"):
        torch.testing.assert_close(branches[kind].head[2][0].weight, modal.roi_heads.mask_head[2][0].weight)
        torch.testing.assert_close(branches[kind].predictor.mask_fcn_logits.bias,
                                   modal.roi_heads.mask_predictor.mask_fcn_logits.bias)
        torch.testing.assert_close(branches[kind].predictor.conv5_mask.weight,
                                   modal.roi_heads.mask_predictor.conv5_mask.weight)
    n_branch_tensors = len(branches["amodal"].state_dict())
    assert len(report["loaded"]) == 2 * n_branch_tensors and not report["missing"]


def test_modal_head_of_another_class_count_is_a_shape_error_unless_predictor_skipped(tmp_path):
    torch.manual_seed(0)
    modal = _modal_maskrcnn(num_classes=5)
    path = tmp_path / "modal5.safetensors"
    save_file({k: v.contiguous() for k, v in modal.state_dict().items()}, str(path))
    model = build_model(tiny_config())
    with pytest.raises(WeightsError, match=r"mask_predictor.mask_fcn_logits.weight' has shape "
                                           r"\(5, 8, 1, 1\).*needs \(3, 8, 1, 1\)"):
        init_mask_heads_from_modal(model, path)
    logits_before = model.roi_heads.mask_heads.branches["visible"].predictor.mask_fcn_logits.weight.clone()
    report = init_mask_heads_from_modal(model, path, skip_predictor=True)
    visible = model.roi_heads.mask_heads.branches["visible"]
    torch.testing.assert_close(visible.head[0][0].weight, modal.roi_heads.mask_head[0][0].weight)
    assert torch.equal(visible.predictor.mask_fcn_logits.weight, logits_before)
    assert report["skipped"] and all(".predictor." in k for k in report["skipped"])


def test_a_file_without_a_mask_head_is_an_error(tmp_path):
    path = tmp_path / "backbone_only.safetensors"
    save_file({"backbone.conv1.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(WeightsError, match="backbone_only.safetensors holds no torchvision mask head"):
        init_mask_heads_from_modal(build_model(tiny_config()), path)


@pytest.mark.parametrize("damage, pattern", [
    ("int32", r"tensor '{key}' is torch.int32, the model expects torch.float32"),
    ("scaled", r"tensor '{key}' holds a value of magnitude 1e\+30"),
])
def test_wrong_dtype_or_absurd_values_are_refused(saved, tmp_path, damage, pattern):
    # Both loaded silently before and gave a model that detects nothing.
    target = _copy(saved, tmp_path)
    state = load_file(str(target))
    key = "roi_heads.box_predictor.cls_score.weight"
    state[key] = state[key].to(torch.int32) if damage == "int32" else state[key] * 0 + 1e30
    save_file(state, str(target))
    with pytest.raises(WeightsError, match=pattern.format(key=key)):
        load_weights(target)


def test_pickled_pth_is_refused_in_one_line(tmp_path):
    path = tmp_path / "modal.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "note": object()}, path)  # an arbitrary object: pickle
    with pytest.raises(WeightsError) as info:
        init_mask_heads_from_modal(build_model(tiny_config()), path)
    message = str(info.value)
    assert "\n" not in message and "pickled Python objects" in message
    assert "weights_only=False" not in message  # never advise running the file's code
