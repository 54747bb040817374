"""Two-process DDP training (torchrun, gloo on CPU, 127.0.0.1 only): both ranks end with the same
parameters, different from the initial ones, and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    import orcnn_core.model as model_pkg
    from orcnn_core.engine.config import train_config_from_dict
    from orcnn_core.engine.trainer import train

    rank = int(os.environ["RANK"])
    cfg = train_config_from_dict(json.loads(open(sys.argv[1]).read()))
    real_build = model_pkg.build_model

    def build_and_record(model_cfg):
        model = real_build(model_cfg)
        save_file({k: v.detach().clone().contiguous() for k, v in model.named_parameters()},
                  os.path.join(sys.argv[3], f"initial_rank{rank}.safetensors"))
        return model

    model_pkg.build_model = build_and_record
    model = train(cfg, sys.argv[2], show_progress=False)
    save_file({k: v.detach().contiguous() for k, v in model.named_parameters()},
              os.path.join(sys.argv[3], f"final_rank{rank}.safetensors"))
""")

CONFIG = {
    "model": {"num_classes": 2, "backbone": "mobilenet_v3_fpn", "backbone_width_mult": 0.25, "norm": "batch",
              "fpn_channels": 16, "anchor_sizes": [8, 16, 32, 64], "rpn_pre_nms_top_n_train": 100,
              "rpn_post_nms_top_n_train": 50, "rpn_batch_size_per_image": 32, "box_representation_size": 32,
              "box_batch_size_per_image": 16, "mask_head_channels": 8, "mask_roi_size": 7, "min_size": 64,
              "max_size": 96},
    "data": {"synthetic": {"images": 8, "val_images": 0, "seed": 1, "classes": 2, "size": [96, 64]}},
    "solver": {"base_lr": 0.01, "warmup_iters": 1, "max_iter": 3, "batch_size": 4, "schedule": "step",
               "steps": [100]},
    "train": {"seed": 5, "eval_period": 0, "checkpoint_period": 0, "log_period": 1, "num_workers": 0},
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_training_keeps_ranks_in_sync(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps(CONFIG))
    (tmp_path / "worker.py").write_text(WORKER)
    out, dumps = tmp_path / "run", tmp_path / "dumps"
    dumps.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               str(tmp_path / "worker.py"), str(tmp_path / "cfg.json"), str(out), str(dumps)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    initial = [load_file(str(dumps / f"initial_rank{r}.safetensors")) for r in (0, 1)]
    final = [load_file(str(dumps / f"final_rank{r}.safetensors")) for r in (0, 1)]
    # Same seed on both ranks -> same start; DDP's averaged gradients -> same end.
    assert all(torch.equal(initial[0][k], initial[1][k]) for k in initial[0])
    assert final[0].keys() == final[1].keys() == initial[0].keys()
    for key in final[0]:
        assert torch.equal(final[0][key], final[1][key]), f"ranks disagree on {key}"
    changed = [k for k in final[0] if not torch.equal(final[0][k], initial[0][k])]
    assert len(changed) > len(final[0]) // 2, "training did not move the weights"

    # Rank 0 alone wrote the checkpoint and the log; its weights are the trained ones.
    written = load_file(str(out / "model_final.safetensors"))
    assert all(torch.equal(written[k], final[0][k]) for k in final[0])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]
    state = json.loads((out / "model_final.state.json").read_text())
    assert state["extra"]["world_size"] == 2 and state["iteration"] == 3
