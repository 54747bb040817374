"""Sub-commands of ``orcnn`` owned by the engine: train, predict, demo, export (see orcnn_core/cli.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orcnn_core.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``predict``, ``demo`` and ``export``."""
    p = subparsers.add_parser("train", help="train a model from a YAML config (torchrun for several GPUs)")
    p.add_argument("--config", required=True, help="training YAML (sections model, data, solver, train)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last_checkpoint")
    p.add_argument("--init-modal", default=None, metavar="PATH",
                   help="initialise both mask heads from a torchvision Mask R-CNN state dict")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs only)")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("predict", help="predict a folder of images into a results JSON")
    p.add_argument("--images", required=True,
                   help="folder of images (png, jpg, bmp, tif, webp; sub-folders too)")
    p.add_argument("--out", required=True, help="results JSON to write (read by `orcnn eval`)")
    p.add_argument("--weights", default=None, help="NAME.safetensors (default: the bundled demo model)")
    p.add_argument("--viz", default=None, metavar="DIR", help="also write overlay PNGs here")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--score-threshold", type=float, default=None)
    p.add_argument("--gt", default=None, help="annotation file: take image ids from it by file name")
    p.add_argument("--no-layering", dest="layering", action="store_false",
                   help="write the model's raw masks and graph instead of the scene layering")
    p.add_argument("--depth", default=None, metavar="DIR",
                   help="aligned depth PNGs (uint16 mm, DIR/NAME.png per image NAME): 3D per instance in "
                        "the results (geometry_3d); needs --camera")
    p.add_argument("--camera", default=None, metavar="CAMERA.json",
                   help='intrinsics: {"fx", "fy", "cx", "cy"} (pixels), or an `orcnn synth --depth` '
                        "annotation file (per-image camera)")
    p.set_defaults(func=_predict)

    p = subparsers.add_parser("demo", help="run the bundled model on synthetic scenes: overlays + results")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--images", default=None, help="folder of images instead of synthetic scenes")
    source.add_argument("--synth", type=int, default=4, metavar="N", help="number of synthetic scenes (4)")
    p.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    p.add_argument("--weights", default=None, help="NAME.safetensors (default: the bundled demo model)")
    p.add_argument("--seed", type=int, default=None, help="seed of the synthetic scenes")
    p.add_argument("--device", default="auto")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--no-layering", dest="layering", action="store_false",
                   help="show the model's raw masks and graph instead of the scene layering")
    p.set_defaults(func=_demo)

    p = subparsers.add_parser("export", help="export a model to TorchScript or ONNX at a fixed input size")
    p.add_argument("--weights", default=None, help="NAME.safetensors (default: the bundled demo model)")
    p.add_argument("--format", default="torchscript", choices=("torchscript", "onnx"))
    p.add_argument("--out", default=None, help="output file (default: next to the weights, .pt / .onnx)")
    p.add_argument("--size", default="320x240", help="fixed input size WIDTHxHEIGHT (default 320x240)")
    p.add_argument("--score-threshold", type=float, default=None)
    p.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    import torch

    from orcnn_core.engine.config import load_train_config
    from orcnn_core.engine.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_train_config(args.config)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    train(cfg, out, resume=args.resume, init_modal=args.init_modal, show_progress=not args.no_progress)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from orcnn_core.engine.predict import predict_folder

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1 (got {args.batch_size})")
    summary = predict_folder(args.images, args.out, weights=args.weights, viz_dir=args.viz,
                             batch_size=args.batch_size, device=args.device,
                             score_threshold=args.score_threshold, gt=args.gt,
                             analysis=_analysis(args.layering), depth_dir=args.depth,
                             camera_file=args.camera)
    print(summary.format(Path(args.out)))
    if summary.skipped:  # the good images' results are written: a warning, not a failure
        print(f"orcnn predict: warning: {sum(summary.skipped.values())} image(s) skipped "
              f"({summary.skipped.format()})", file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from orcnn_core.engine.demo import DEMO_SEED, run_demo

    if args.images is None and args.synth < 1:
        raise ConfigError(f"--synth must be >= 1 (got {args.synth})")
    run_demo(args.out, images_dir=args.images, synth_count=args.synth, weights=args.weights,
             seed=DEMO_SEED if args.seed is None else args.seed, device=args.device,
             score_threshold=args.score_threshold, analysis=_analysis(args.layering))
    return 0


def _analysis(layering: bool):
    """The per-frame analysis of the node's defaults, with the layering on or off."""
    from orcnn_core.analysis import AnalysisConfig
    from orcnn_core.layering import LayeringConfig

    return AnalysisConfig(layering=LayeringConfig(enabled=layering))


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"--size must look like 320x240 (got {text!r})") from exc
    return width, height


def _export(args: argparse.Namespace) -> int:
    from orcnn_core.engine.export import default_export_path, export_model
    from orcnn_core.engine.predictor import bundled_weights, load_predictor

    width, height = _parse_size(args.size)
    weights = Path(args.weights) if args.weights else bundled_weights()
    predictor = load_predictor(weights, device="cpu", score_threshold=args.score_threshold)
    out = Path(args.out) if args.out else default_export_path(weights, args.format)
    export_model(predictor.model, out, args.format, height=height, width=width,
                 score_threshold=predictor.score_threshold)
    print(f"exported {out} ({args.format}, input 3x{height}x{width} RGB float in [0, 1]; outputs: boxes, "
          "labels, scores, amodal/visible/invisible mask probabilities)")
    return 0
