"""Sub-commands of ``orcnn`` owned by this package: ``bag-from-images`` and ``replay``.

Registered through the ``orcnn.commands`` entry point (pyproject.toml), see orcnn_core/cli.py.
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``orcnn bag-from-images`` and ``orcnn replay``."""
    from orcnn_ros.replay import cli as replay_cli

    replay_cli.register(subparsers)
    p = subparsers.add_parser(
        "bag-from-images", help="write a rosbag2 from a folder of images (for orcnn-replay)",
        description="Write the images of DIR (and its sub-folders, sorted by relative path) as one "
                    "sensor_msgs Image or "
                    "CompressedImage topic of a new rosbag2, plus BAG/image_map.json listing "
                    "{index, stamp_ns, file_name} per frame (used by orcnn-replay --gt).")
    p.add_argument("dir", metavar="DIR", help="folder of images (.png, .jpg, ...; sub-folders too)")
    p.add_argument("--out", required=True, metavar="BAG", help="output bag folder (must not exist)")
    p.add_argument("--rate", type=float, default=10.0, metavar="HZ", help="frame rate (default 10)")
    p.add_argument("--compressed", action="store_true",
                   help="write sensor_msgs/CompressedImage (PNG/JPEG file bytes as they are) "
                        "instead of raw bgr8 Image")
    p.add_argument("--topic", default=None,
                   help="topic name (default /image, or /image/compressed with --compressed)")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="bag storage")
    p.add_argument("--frame-id", default="camera", help="header.frame_id (default camera)")
    p.add_argument("--start-stamp", type=Decimal, default=None, metavar="SEC",
                   help="stamp of the first frame in seconds since the epoch (default: now)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    p.add_argument("--depth", metavar="DEPTH_DIR", default=None,
                   help="folder of aligned depth PNGs (uint16 mm, DEPTH_DIR/NAME.png per image NAME): also "
                        "write each frame's 16UC1 depth image and camera_info (needs --camera)")
    p.add_argument("--camera", metavar="FILE", default=None,
                   help='intrinsics: JSON {"fx", "fy", "cx", "cy"} or an `orcnn synth --depth` '
                        "annotation file")
    p.add_argument("--depth-topic", default=None, help="depth image topic (default /depth/image)")
    p.add_argument("--camera-info-topic", default=None, help="camera_info topic (default /depth/camera_info)")
    p.set_defaults(func=run_bag_from_images)


def run_bag_from_images(args: argparse.Namespace) -> int:
    """Handler of ``orcnn bag-from-images``."""
    from orcnn_ros.bag_from_images import CAMERA_INFO_TOPIC, DEPTH_TOPIC, image_map_path, images_to_bag

    topic = args.topic or ("/image/compressed" if args.compressed else "/image")
    # Decimal keeps nanoseconds exact: a float of today's epoch seconds has ~256 ns resolution.
    start_ns = time.time_ns() if args.start_stamp is None else int(args.start_stamp * 10**9)
    entries = images_to_bag(args.dir, args.out, topic=topic, rate_hz=args.rate,
                            compressed=args.compressed, storage=args.storage, frame_id=args.frame_id,
                            start_ns=start_ns, overwrite=args.overwrite, depth_dir=args.depth,
                            camera_file=args.camera, depth_topic=args.depth_topic or DEPTH_TOPIC,
                            camera_info_topic=args.camera_info_topic or CAMERA_INFO_TOPIC)
    depth = (f", depth on {args.depth_topic or DEPTH_TOPIC} + {args.camera_info_topic or CAMERA_INFO_TOPIC}"
             if args.depth else "")
    print(f"wrote {len(entries)} frames to {args.out} (topic {topic}{depth}, {args.storage}); "
          f"image map {image_map_path(args.out)}")
    return 0
