"""Sub-commands of ``orcnn`` owned by the data package: synth, convert, augment, stats."""

from __future__ import annotations

import argparse

from orcnn_core.errors import DatasetError

FORMAT_NAMES = ("cocoa_raw", "cocoa", "d2sa", "kins", "kins2020", "uoais", "orcnn")


def parse_size(text: str) -> tuple:
    """``"WxH"`` -> ``(W, H)``."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got '{text}'") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got '{text}'")
    return width, height


def _print_stats(annotations, title: str) -> None:
    from orcnn_core.data.stats import dataset_stats, format_stats

    print(format_stats(dataset_stats(annotations), title))


def run_synth(args: argparse.Namespace) -> int:
    """``orcnn synth``: write procedural scenes and print their statistics."""
    from orcnn_core.data.synth import synthesize
    from orcnn_core.data.synth_depth import SensorModel

    depth = args.depth or args.depth_sensor
    annotations = synthesize(args.out, images=args.images, seed=args.seed, classes=args.classes,
                             size=args.size, occlusion=args.occlusion, min_visible_fraction=args.min_visible,
                             depth=depth, sensor=SensorModel() if args.depth_sensor else None)
    kind = ", depth with the sensor model" if args.depth_sensor else ", exact depth" if depth else ""
    _print_stats(annotations, f"synthetic scenes in {args.out} (seed {args.seed}, "
                              f"occlusion {args.occlusion}{kind})")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """``orcnn convert``: any supported format, or a COCOA + COCO pair (COCOA cls), to the project format."""
    from orcnn_core.data.convert import convert, merge_cocoa_cls
    from orcnn_core.data.io import load_annotations, write_annotations

    if args.cocoa_cls or args.coco:
        if not (args.cocoa_cls and args.coco):
            raise DatasetError("--cocoa-cls and --coco go together")
        if args.input:
            raise DatasetError("give either INPUT or --cocoa-cls/--coco, not both")
        cocoa = load_annotations(args.cocoa_cls, args.format, no_stuff=True, repair=args.repair)
        annotations = merge_cocoa_cls(cocoa, args.coco, args.iou)
        write_annotations(annotations, None, args.out)
    elif args.input:
        annotations = convert(args.input, args.out, args.format, no_stuff=args.no_stuff, repair=args.repair)
    else:
        raise DatasetError("nothing to convert: give INPUT, or --cocoa-cls and --coco")
    _print_stats(annotations, f"wrote {args.out} ({annotations.format} -> orcnn)")
    return 0


def run_augment(args: argparse.Namespace) -> int:
    """``orcnn augment``: amodal images from modal labels (D2S amodal augmentation)."""
    from orcnn_core.data.augment import AugmentConfig, augment

    config = AugmentConfig(size=args.size, min_visible_fraction=args.min_visible)
    annotations = augment(args.modal, args.images, args.out, count=args.count, seed=args.seed,
                          backgrounds=args.backgrounds, config=config)
    _print_stats(annotations, f"augmented images in {args.out} (seed {args.seed})")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    """``orcnn stats``: the paper's Table 3 for any supported file."""
    from orcnn_core.data.io import load_annotations

    annotations = load_annotations(args.annotations, args.format, no_stuff=args.no_stuff, repair=args.repair)
    _print_stats(annotations, f"{args.annotations} ({annotations.format})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synth``, ``convert``, ``augment`` and ``stats``."""
    p = subparsers.add_parser("synth", help="generate synthetic tabletop scenes with exact amodal masks")
    p.add_argument("--out", required=True, help="output folder (images/ + annotations.json)")
    p.add_argument("--images", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=int, default=6, help="number of object classes (1..10)")
    p.add_argument("--size", type=parse_size, default=(640, 480), help="WxH (default 640x480)")
    p.add_argument("--occlusion", choices=("low", "mid", "high"), default="mid")
    p.add_argument("--min-visible", type=float, default=0.1,
                   help="drop instances whose visible area is below this fraction of the amodal area")
    p.add_argument("--depth", action="store_true",
                   help="also write depth/NAME.png (uint16 mm) with the camera and each object's 3D truth "
                        "in the annotations (docs/data.md, RGB-D scenes)")
    p.add_argument("--depth-sensor", action="store_true",
                   help="depth as a depth camera measures it: noise, quantisation, holes and flying pixels "
                        "at edges (implies --depth)")
    p.set_defaults(func=run_synth)

    p = subparsers.add_parser("convert",
                              help="convert any amodal format (or COCOA + COCO) to the project format")
    p.add_argument("input", nargs="?", help="annotation file or folder of COCOA raw records")
    p.add_argument("--out", required=True, help="output JSON")
    p.add_argument("--format", choices=FORMAT_NAMES, help="input format (default: detected)")
    p.add_argument("--no-stuff", action="store_true", help="drop stuff regions (COCOA)")
    p.add_argument("--repair", action="store_true",
                   help="add visible pixels outside the amodal mask to it and recompute inconsistent "
                        "invisible masks")
    p.add_argument("--cocoa-cls", metavar="COCOA", help="build COCOA cls from this COCOA file ...")
    p.add_argument("--coco", metavar="COCO_INSTANCES", help="... and this COCO instances file")
    p.add_argument("--iou", type=float, default=0.75, help="visible-mask IoU a COCOA cls match must exceed")
    p.set_defaults(func=run_convert)

    p = subparsers.add_parser("augment", help="amodal training images from modal COCO labels (D2S style)")
    p.add_argument("--modal", required=True, help="modal COCO instances JSON")
    p.add_argument("--images", required=True, help="folder the COCO file names are relative to")
    p.add_argument("--out", required=True, help="output folder (images/ + annotations.json)")
    p.add_argument("--count", type=int, required=True, help="number of images to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backgrounds", help="folder of background images (default: synthesized tables)")
    p.add_argument("--size", type=parse_size, default=None, help="output WxH (default: source image size)")
    p.add_argument("--min-visible", type=float, default=0.1,
                   help="do not paste instances whose visible area would be below this fraction")
    p.set_defaults(func=run_augment)

    p = subparsers.add_parser("stats", help="dataset statistics like the paper's Table 3")
    p.add_argument("annotations", help="annotation file or folder")
    p.add_argument("--format", choices=FORMAT_NAMES, help="input format (default: detected)")
    p.add_argument("--no-stuff", action="store_true", help="drop stuff regions (COCOA)")
    p.add_argument("--repair", action="store_true",
                   help="repair inconsistent masks (as convert --repair) instead of refusing the file")
    p.set_defaults(func=run_stats)
