"""Training speed of ORCNN against torchvision's MaskRCNN with the same backbone, heads and batch.

Both models train on the same synthetic 320x240 scenes (~8 instances, occlusion level "high"), batch 2,
with torch.set_num_threads(2). The models alternate step by step so that any load on the machine hits
both alike; the figure is the median seconds per iteration after warm-up. ORCNN does the work of
Mask R-CNN plus a second mask head (visible) and the invisible loss.

    python bench/train.py [--config config/models/synth_demo.yaml] [--iters 12] [--warmup 3]

Last line: ``train_step_ratio: <ORCNN seconds per iteration / MaskRCNN seconds per iteration>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def mask_rcnn_like(cfg) -> torch.nn.Module:
    """torchvision MaskRCNN with ORCNN's backbone, anchors, box head and mask-head width."""
    from common import torchvision_mask_rcnn

    return torchvision_mask_rcnn(cfg)


def batches(count: int, batch: int, classes: int) -> list:
    """Synthetic training batches in the ORCNN target format (``masks`` added for MaskRCNN)."""
    from orcnn_core.data import SyntheticAmodalDataset, collate

    dataset = SyntheticAmodalDataset(count * batch, seed=99, classes=classes, size=(320, 240),
                                     occlusion="high")
    out = []
    for b in range(count):
        images, targets = collate([dataset[b * batch + i] for i in range(batch)])
        for t in targets:
            t["masks"] = t["amodal_masks"]  # Mask R-CNN learns the amodal masks (ARCNN)
        out.append((images, targets))
    return out


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: list, targets: list) -> float:
    """One timed SGD iteration; returns seconds."""
    started = time.perf_counter()
    losses = model(images, targets)
    total = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/models/synth_demo.yaml")
    parser.add_argument("--iters", type=int, default=12, help="timed iterations per model (>= 10)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    from orcnn_core.model import build_model, load_model_config

    cfg = load_model_config(args.config)
    models = {"orcnn": build_model(cfg).train(), "maskrcnn": mask_rcnn_like(cfg).train()}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.005, momentum=0.9) for k, m in models.items()}
    data = batches(args.warmup + args.iters, args.batch, cfg.num_classes)
    instances = np.mean([len(t["labels"]) for _, targets in data for t in targets])
    print(f"config {args.config}: backbone {cfg.backbone}, batch {args.batch}, 320x240 scenes, "
          f"{instances:.1f} instances per image, torch threads {torch.get_num_threads()}")
    times: dict[str, list[float]] = {k: [] for k in models}
    for i, (images, targets) in enumerate(data):
        for name, model in models.items():  # alternate: the same machine load for both
            own = [{k: v for k, v in t.items() if name == "maskrcnn" or k != "masks"} for t in targets]
            seconds = step(model, optimizers[name], images, own)
            if i >= args.warmup:
                times[name].append(seconds)
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, median in medians.items():
        print(f"{name:>9}: median {median:.3f} s/iter ({1 / median:.2f} it/s) over {len(times[name])} "
              f"iterations, min {min(times[name]):.3f}, max {max(times[name]):.3f}")
    print(f"train_step_ratio: {medians['orcnn'] / medians['maskrcnn']:.3f}")


if __name__ == "__main__":
    main()
