"""Fuzz campaign: mutated annotation, results, image and bag files and ROS frames through `orcnn convert`,
`stats`, `eval`, `predict` and `replay`.

A fixed-seed run: every input is a seed file damaged by one to three mutators (bit flips,
truncation, inserted bytes, other encodings, deep nesting, values replaced by NaN / Infinity / huge
or negative numbers / wrong types / garbage RLE counts, keys deleted, entries duplicated...), then
run through one target command in its own process with a timeout and a memory cap (RLIMIT_AS).
Outcomes:

  ok         exit 0: the input was still valid, or (predict, replay-frame) skipped with the good data kept
  clean      exit 2 with exactly one stderr line ``orcnn <cmd>: error: ...``
  refused    exit 2 where the run had to go on (a bad image or frame beside good ones)
  unclean    exit 2 with more (or fewer) stderr lines
  traceback  exit 1 (an uncaught exception: a bug)
  hang       still running at the timeout (killed)
  crash      killed by a signal (segfault, abort, ...)
  other      any other exit status

Processes: ``--runner fork`` (default) forks each input from a warm parent that has imported the
project, so that an input costs milliseconds, not an interpreter start; ``--runner exec`` runs a
fresh ``python -m orcnn_core.cli`` per input (slower, for confirming a finding).

Extending: a corpus (``CORPORA``) makes seed files, a mutator (``BYTE_MUTATORS``,
``VALUE_MUTATORS``) damages one, a target (``TARGETS``) names the corpus it takes and the command
line it runs. ``predict`` gets the damaged image beside a good one and ``replay-frame`` the damaged
message between two good frames: both must finish with exit 0.

Prints the counts per target and inputs per second; failing inputs are kept (``--keep``). Last line:
``fuzz_failures: <tracebacks + unclean + hangs + crashes + other>``.
"""

from __future__ import annotations

import argparse
import collections
import copy
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_COCOA = REPO.parent / "shared" / "fixtures" / "real" / "cocoa_raw_demo"
FAILURES = ("traceback", "unclean", "refused", "hang", "crash", "other")
H, W = 48, 64


# ---- corpora: name -> function(workdir) -> {seed name: (bytes, suffix)} ---------------------------------

def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as pycoco

    rle = pycoco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _runs(mask: np.ndarray) -> list:
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.r_[0, edges, flat.size]).tolist()
    return [0, *runs] if flat[0] else runs


TOP, MIDDLE, BOTTOM = _rect(4, 20, 4, 30), _rect(12, 36, 20, 50), _rect(28, 46, 10, 60)


def _flat_cocoa() -> dict:
    """Three objects: TOP over MIDDLE over BOTTOM; polygons, string RLEs and a list RLE."""
    middle_visible, bottom_visible = MIDDLE & ~TOP, BOTTOM & ~TOP & ~MIDDLE
    return {
        "images": [{"id": 1, "file_name": "scene.png", "height": H, "width": W}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[4, 4, 30, 4, 30, 20, 4, 20]],
             "bbox": [4, 4, 26, 16], "iscrowd": 0, "occlude_rate": 0.0, "name": "box"},
            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": _rle(MIDDLE),
             "visible_mask": _rle(middle_visible), "invisible_mask": _rle(MIDDLE & ~middle_visible),
             "bbox": [20, 12, 30, 24], "occlude_rate": 0.2, "name": "cup"},
            {"id": 3, "image_id": 1, "category_id": 2,
             "segmentation": {"size": [H, W], "counts": _runs(BOTTOM)},
             "visible_mask": {"size": [H, W], "counts": _runs(bottom_visible)}, "bbox": [10, 28, 50, 18]},
        ],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "cup"}],
    }


def _project_format() -> dict:
    """The flat COCOA scene in the project's own format, built here (not by the code under test, so that
    every version of the project is fuzzed with the same inputs)."""
    def xywh(mask):
        ys, xs = np.nonzero(mask)
        return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]

    annotations = []
    for ann_id, (category, amodal, visible) in enumerate(
            [(1, TOP, TOP), (2, MIDDLE, MIDDLE & ~TOP), (2, BOTTOM, BOTTOM & ~TOP & ~MIDDLE)], start=1):
        annotations.append({
            "id": ann_id, "image_id": 1, "category_id": category, "segmentation": _rle(amodal),
            "visible_mask": _rle(visible), "invisible_mask": _rle(amodal & ~visible), "bbox": xywh(amodal),
            "visible_bbox": xywh(visible), "area": int(amodal.sum()), "visible_area": int(visible.sum()),
            "occlude_rate": float(1 - visible.sum() / amodal.sum()), "iscrowd": 0, "extra": {"name": "obj"}})
    return {"info": {"format": "orcnn", "version": 1, "image_root": "."},
            "images": [{"id": 1, "file_name": "scene.png", "height": H, "width": W}],
            "annotations": annotations, "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "cup"}]}


def annotation_seeds(work: Path) -> dict:
    """Flat COCOA, KINS, a detectron2 list, the project format, and the real COCOA raw records."""
    flat = _flat_cocoa()
    kins = {"images": flat["images"], "categories": flat["categories"], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 2, "segmentation": _rle(MIDDLE),
         "inmodal_seg": _rle(MIDDLE & ~TOP),
         "bbox": [20, 12, 30, 24], "inmodal_bbox": [20, 12, 30, 24], "ico_id": 1, "oco_id": 2}]}
    d2_list = [{"file_name": "scene.png", "height": H, "width": W, "image_id": 1, "annotations": [
        {"segmentation": _rle(BOTTOM), "visible_mask": _rle(BOTTOM & ~MIDDLE), "category_id": 1}]}]
    project = _project_format()
    named = (("flat_cocoa", flat), ("kins", kins), ("d2_list", d2_list), ("project", project))
    seeds = {name: (json.dumps(data).encode(), ".json") for name, data in named}
    for path in sorted(REAL_COCOA.glob("*.json"))[:3]:
        seeds[f"cocoa_raw_{path.stem}"] = (path.read_bytes(), ".json")
    return seeds


def results_seeds(work: Path) -> dict:
    """A results file for the flat COCOA ground truth: RLEs, a polygon, a list RLE, boxes."""
    entries = [
        {"image_id": 1, "file_name": "scene.png", "category_id": 1, "score": 0.9, "segmentation": _rle(TOP),
         "visible_mask": _rle(TOP), "invisible_mask": _rle(np.zeros((H, W), bool)), "bbox": [4, 4, 26, 16],
         "visible_bbox": [4, 4, 26, 16]},
        {"image_id": 1, "file_name": "scene.png", "category_id": 2, "score": 0.7,
         "segmentation": [[20, 12, 50, 12, 50, 36, 20, 36]], "visible_mask": _rle(MIDDLE & ~TOP)},
        {"image_id": 1, "file_name": "scene.png", "category_id": 2, "score": 0.4,
         "segmentation": {"size": [H, W], "counts": _runs(BOTTOM)}},
    ]
    return {"results": (json.dumps(entries).encode(), ".json")}


def _scene_rgb() -> np.ndarray:
    """A small synthetic scene (RGB uint8), the content of the image, bag and frame seeds."""
    from orcnn_core.data import synth

    return synth.generate_scene(np.random.default_rng([7, 0]), classes=6, size=(96, 72)).image


def image_seeds(work: Path) -> dict:
    """The same scene as PNG, JPEG (baseline and progressive) and BMP file bytes."""
    import cv2

    bgr = cv2.cvtColor(_scene_rgb(), cv2.COLOR_RGB2BGR)
    return {"png": (cv2.imencode(".png", bgr)[1].tobytes(), ".png"),
            "jpeg": (cv2.imencode(".jpg", bgr)[1].tobytes(), ".jpg"),
            "jpeg_progressive": (cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
                                 ".jpg"),
            "bmp": (cv2.imencode(".bmp", bgr)[1].tobytes(), ".bmp")}


def bag_seeds(work: Path) -> dict:
    """Bare bag files of three frames: a raw-image .db3 and a CompressedImage .mcap."""
    import cv2

    from orcnn_ros.bag_from_images import images_to_bag

    folder = work / "bag_frames"
    folder.mkdir(exist_ok=True)
    for k in range(3):
        shifted = np.roll(_scene_rgb(), 8 * k, axis=1)
        cv2.imwrite(str(folder / f"{k}.png"), cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
    seeds = {}
    for name, storage, compressed, suffix in (("raw_db3", "sqlite3", False, ".db3"),
                                              ("compressed_mcap", "mcap", True, ".mcap")):
        out = work / f"seed_bag_{name}"
        images_to_bag(folder, out, topic="/image", compressed=compressed, storage=storage, start_ns=10**18)
        (data_file,) = out.glob(f"*{suffix}")
        seeds[name] = (data_file.read_bytes(), suffix)
    return seeds


def frame_seeds(work: Path) -> dict:
    """CDR bytes of one Image (bgr8) and one CompressedImage (PNG) message: what a bag or the node gets."""
    import cv2

    from orcnn_ros import messages

    header = messages.make_header(1, 2, "camera")
    bgr = cv2.cvtColor(_scene_rgb(), cv2.COLOR_RGB2BGR)
    raw = messages.serialize(messages.make_image(header, bgr, encoding="bgr8"), messages.IMAGE_TYPE)
    png = messages.make_compressed_image(header, cv2.imencode(".png", bgr)[1].tobytes(), "png")
    return {"image": (raw, ".image"),
            "compressed": (messages.serialize(png, messages.COMPRESSED_IMAGE_TYPE), ".compressed")}


CORPORA: dict = {"annotations": annotation_seeds, "results": results_seeds, "images": image_seeds,
                 "bags": bag_seeds, "frames": frame_seeds}


# ---- mutators ------------------------------------------------------------------------------------------

def _bit_flips(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[:rng.randrange(len(data))]


def _insert_bytes(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data) + 1)
    junk = rng.choice([bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))), b"\x00", b"\xff\xfe",
                       b"NaN", b"-Infinity", b"1e999", b"9" * 5000, b"\\", b'"', b"[", b"}"])
    return data[:i] + junk + data[i:]


def _delete_chunk(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 64):]


def _reencode(rng: random.Random, data: bytes) -> bytes:
    text = data.decode("utf-8", errors="replace")
    encoding = rng.choice(["utf-16", "utf-16-le", "utf-32", "latin-1", "utf-8-sig", "cp1252"])
    return text.encode(encoding, errors="replace")


def _nest(rng: random.Random, data: bytes) -> bytes:
    depth = rng.choice([99, 101, 1000, 100000, 1000000])
    return b"[" * depth + data + b"]" * depth


BYTE_MUTATORS: dict = {"bit_flips": _bit_flips, "truncate": _truncate, "insert_bytes": _insert_bytes,
                       "delete_chunk": _delete_chunk, "reencode": _reencode, "nest": _nest}


def _interesting(rng: random.Random):
    """A value that breaks naive readers."""
    return copy.deepcopy(rng.choice([
        float("nan"), float("inf"), float("-inf"), 2 ** 63, -(2 ** 63), 2 ** 64 + 1, 10 ** 30, 10 ** 400,
        1e308,
        -1, 0, 1.5, 100000, True, None, "", "abc", "a\nb", "\u00e9", "0", "0P", "o" * 50, "PPPPPPP0", "\x00",
        [], {}, [5, 5], [8000, 8000], [-1, 10], [[1, 2, 3]], [[0, 0, 2 ** 63, 0, 5, 5]],
        [[1, 1, float("nan"), 4, 5, 5]], {"size": [100000, 100000], "counts": "0"},
        {"size": [H, W], "counts": ""}, {"size": ["48", W], "counts": "0"}, {"counts": "0"},
        [[[[[[[[[[1]]]]]]]]]], "x" * 10000, list(range(200)),
    ]))


def _rle_garbage(rng: random.Random):
    alphabet = "0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmno"
    counts = rng.choice([
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))),
        [rng.randint(-10, H * W) for _ in range(rng.randint(0, 8))],
        "".join(rng.choice(alphabet + "~ p\u00e9") for _ in range(rng.randint(1, 20))),
    ])
    size = rng.choice([[H, W], [W, H], [H, W + 1], [0, W], [float("nan"), W]])
    return {"size": size, "counts": counts}


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:50]):
            yield from _paths(item, (*prefix, index))


def _at(data, path):
    for key in path:
        data = data[key]
    return data


def _replace(rng: random.Random, data):
    paths = [p for p in _paths(data) if p]
    if not paths:
        return _interesting(rng)
    path = rng.choice(paths)
    parent = _at(data, path[:-1])
    current = parent[path[-1]]
    if isinstance(current, dict) and "counts" in current and rng.random() < 0.5:
        parent[path[-1]] = _rle_garbage(rng)
    elif isinstance(current, (int, float)) and not isinstance(current, bool) and rng.random() < 0.5:
        parent[path[-1]] = rng.choice([-current, current * 1e30, current + 0.5, str(current), [current]])
    else:
        parent[path[-1]] = _interesting(rng)
    return data


def _delete(rng: random.Random, data):
    paths = [p for p in _paths(data) if p]
    if paths:
        path = rng.choice(paths)
        del _at(data, path[:-1])[path[-1]]
    return data


def _duplicate(rng: random.Random, data):
    lists = [p for p in _paths(data) if isinstance(_at(data, p), list) and _at(data, p)]
    if lists:
        target = _at(data, rng.choice(lists))
        target.append(copy.deepcopy(rng.choice(target)))
    return data


def _swap_types(rng: random.Random, data):
    paths = [p for p in _paths(data) if p]
    if paths:
        path = rng.choice(paths)
        parent = _at(data, path[:-1])
        value = parent[path[-1]]
        parent[path[-1]] = rng.choice([[value], {"value": value}, json.dumps(value), None])
    return data


VALUE_MUTATORS: dict = {"replace": _replace, "delete": _delete, "duplicate": _duplicate,
                        "swap_types": _swap_types}


def mutate(rng: random.Random, seed: bytes) -> tuple[bytes, list]:
    """A damaged copy of ``seed`` and the names of the mutators applied (JSON values first, bytes last)."""
    names = []
    data = None
    try:
        data = json.loads(seed)
    except ValueError:
        pass
    steps = rng.randint(1, 3)
    if data is not None and rng.random() < 0.7:
        for _ in range(steps):
            name = rng.choice(sorted(VALUE_MUTATORS))
            data = VALUE_MUTATORS[name](rng, data)
            names.append(name)
        out = json.dumps(data).encode()  # allow_nan: NaN / Infinity literals, as careless tools write them
        if rng.random() < 0.2:
            name = rng.choice(sorted(BYTE_MUTATORS))
            out = BYTE_MUTATORS[name](rng, out)
            names.append(name)
        return out, names
    out = seed
    for _ in range(steps):
        name = rng.choice(sorted(BYTE_MUTATORS))
        out = BYTE_MUTATORS[name](rng, out) if out else out
        names.append(name)
    return out, names


# ---- targets ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A command to fuzz: the corpus its input comes from and its ``orcnn`` arguments.

    ``must_succeed``: the input rides along with good data (a good image, a good frame), so the
    command must finish (exit 0) whatever the bad input is; a refusal counts as a failure.
    """

    corpus: str
    argv: Callable  # (input path, work dir, fixed files) -> list[str]
    must_succeed: bool = False
    memory_gb: float = 0.0  # address-space cap of this target, when above --memory-gb (torch maps a lot)


def _predict_argv(path: Path, work: Path, fixed: dict) -> list:
    """A folder holding the damaged image and one good image: predict must keep the good one."""
    folder = work / "predict_in"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    shutil.copy(fixed["good_image"], folder / "good.png")
    shutil.copy(path, folder / f"damaged{path.suffix}")
    return ["predict", "--images", str(folder), "--out", str(work / "predicted.json"), "--device", "cpu"]


def _frame_bag_argv(path: Path, work: Path, fixed: dict) -> list:
    """A bag with a good frame, the damaged message and another good frame: replay must go on."""
    from orcnn_ros import messages
    from orcnn_ros.bagio import BagWriter

    msgtype = messages.IMAGE_TYPE if path.suffix == ".image" else messages.COMPRESSED_IMAGE_TYPE
    good = fixed["good_frames"][path.suffix]
    bag = work / "frame_bag"
    shutil.rmtree(bag, ignore_errors=True)
    with BagWriter(bag, "sqlite3", checkpoint_s=None) as writer:
        writer.add_topic("/image", msgtype, typestore=messages.typestore())
        for k, data in enumerate((good, path.read_bytes(), good)):
            writer.write("/image", 10**18 + k * 10**8, data)
    return ["replay", str(bag), "--topic", "/image", "--out", str(work / "frame_out"), "--overwrite",
            "--device", "cpu", "--no-progress"]


TARGETS: dict = {
    "convert": Target("annotations", lambda path, work, fixed: ["convert", str(path), "--out",
                                                                str(work / "out.json")]),
    "stats": Target("annotations", lambda path, work, fixed: ["stats", str(path)]),
    # an empty results list fits any ground truth: this target fuzzes the ground-truth side
    "eval-gt": Target("annotations", lambda path, work, fixed: ["eval", "--gt", str(path), "--results",
                                                                str(fixed["no_results"])]),
    "eval-results": Target("results", lambda path, work, fixed: ["eval", "--gt", str(fixed["gt"]),
                                                                 "--results", str(path)]),
    "predict": Target("images", _predict_argv, must_succeed=True, memory_gb=16),
    "replay-bag": Target("bags", lambda path, work, fixed: [
        "replay", str(path), "--topic", "/image", "--out", str(work / "bag_out"), "--overwrite",
        "--device", "cpu", "--no-progress"], memory_gb=16),
    "replay-frame": Target("frames", _frame_bag_argv, must_succeed=True, memory_gb=16),
}


# ---- running one input -----------------------------------------------------------------------------------

def _limit_memory(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_forked(argv: list, timeout: float, memory: int, stderr_path: Path) -> tuple:
    """``(status, stderr)`` of ``orcnn argv`` in a child forked from this (warm) process; status is the
    exit code, ``-signal`` when killed by one, or None at the timeout."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: behave like the interpreter running the console script
        code = 1
        try:
            _limit_memory(memory)
            with open(os.devnull, "w") as devnull, open(stderr_path, "w") as err:
                os.dup2(devnull.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
                sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)
                from orcnn_core import cli

                try:
                    code = int(cli.main(argv) or 0)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                except BaseException:  # noqa: B036 (the interpreter prints any uncaught exception)
                    import traceback

                    traceback.print_exc()
                    code = 1
                sys.stderr.flush()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, stderr_path.read_text(errors="replace")
        time.sleep(0.002)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return code, stderr_path.read_text(errors="replace")


def run_exec(argv: list, timeout: float, memory: int, stderr_path: Path) -> tuple:
    """Like ``run_forked`` with a fresh interpreter (``python -m orcnn_core.cli``)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        done = subprocess.run([sys.executable, "-m", "orcnn_core.cli", *argv], capture_output=True, text=True,
                              timeout=timeout, env=env, preexec_fn=lambda: _limit_memory(memory))
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return None, err
    return done.returncode, done.stderr


def classify(status, stderr: str, command: str, must_succeed: bool = False) -> str:
    """One of ok, clean, unclean, refused (exit 2 where the run had to go on), traceback, hang, crash,
    other."""
    if status is None:
        return "hang"
    if status < 0:
        return "crash"
    if status == 0:
        return "ok"
    if status == 1:
        return "traceback"
    if status == 2:
        if must_succeed:
            return "refused"
        lines = [line for line in stderr.splitlines() if line.strip()]
        clean = len(lines) == 1 and lines[0].startswith(f"orcnn {command}: error: ")
        return "clean" if clean else "unclean"
    return "other"


def mutated_inputs(rng: random.Random, seeds: dict, targets: list, count: int):
    """``count`` cases ``(index, target, seed name, mutators, bytes, suffix)``, targets in turn."""
    for index in range(count):
        target_name = targets[index % len(targets)]
        corpus = seeds[TARGETS[target_name].corpus]
        seed_name = rng.choice(sorted(corpus))
        seed, suffix = corpus[seed_name]
        data, mutators = mutate(rng, seed)
        yield index, target_name, seed_name, mutators, data, suffix


def replayed_inputs(folder: Path, targets: list):
    """The cases of the files ``--keep`` wrote (``NNNNN_TARGET_OUTCOME.json``) whose target is chosen."""
    for path in sorted(folder.iterdir()):
        index, rest = path.stem.split("_", 1)
        target_name = rest.rsplit("_", 1)[0]
        if target_name in targets:
            yield int(index), target_name, path.name, ["replay"], path.read_bytes(), path.suffix


def _stem(seed_name: str, default: str) -> str:
    # a COCOA raw record N.json finds its image N.jpg by its own name: keep it
    return seed_name.rsplit("_", 1)[-1] if seed_name.startswith("cocoa_raw") else default


# ---- the campaign --------------------------------------------------------------------------------------

def main() -> None:
    """Run the campaign and print its figures; the last line is the headline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=2400, help="number of mutated inputs (all targets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="+", default=sorted(TARGETS), choices=sorted(TARGETS),
                        help="default: all; the model targets (predict, replay-*) cost about a second "
                             "an input")
    parser.add_argument("--runner", choices=("fork", "exec"), default="fork")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per input")
    parser.add_argument("--memory-gb", type=float, default=3.0,
                        help="address-space cap per input (RLIMIT_AS)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="copy failing inputs here")
    parser.add_argument("--show", type=int, default=10, help="failures to describe")
    parser.add_argument("--log", default=None, metavar="FILE",
                        help="one line per input: index, target, seed, mutators, outcome, last stderr line")
    parser.add_argument("--replay", default=None, metavar="DIR",
                        help="instead of mutating, run the inputs kept by --keep (NNNNN_TARGET_OUTCOME.json)")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="orcnn_fuzz_"))
    import logging

    logging.disable(logging.WARNING)  # warnings of accepted inputs are not what is measured here
    from orcnn_core import cli  # noqa: F401  (warm the parent: forked children start with it imported)
    from orcnn_core.data import load_annotations  # noqa: F401
    from orcnn_core.evaluation import compute_files  # noqa: F401

    if {"predict", "replay-bag", "replay-frame"} & set(args.targets):  # the model's imports, once
        import torch  # noqa: F401

        from orcnn_core.engine import predictor  # noqa: F401
        from orcnn_ros.replay import run  # noqa: F401
    seeds = {name: CORPORA[name](work) for name in {TARGETS[t].corpus for t in args.targets} | {"results"}}
    fixed = {"results": work / "seed_results.json", "gt": work / "seed_gt.json",
             "no_results": work / "none.json"}
    fixed["results"].write_bytes(results_seeds(work)["results"][0])
    fixed["no_results"].write_bytes(b"[]")
    fixed["gt"].write_bytes(json.dumps(_flat_cocoa()).encode())
    fixed["good_image"] = work / "good_image.png"
    fixed["good_image"].write_bytes(image_seeds(work)["png"][0])
    frames = frame_seeds(work)
    fixed["good_frames"] = {".image": frames["image"][0], ".compressed": frames["compressed"][0]}
    for name in sorted(REAL_COCOA.glob("*.jpg"))[:3]:  # COCOA raw records find their image next to them
        shutil.copy(name, work / name.name)
    runner = run_forked if args.runner == "fork" else run_exec
    memory = int(args.memory_gb * (1 << 30))
    # the unmutated seeds must pass every target, or the campaign measures a broken set-up
    for target_name in args.targets:
        target = TARGETS[target_name]
        for seed_name, (seed, suffix) in sorted(seeds[target.corpus].items()):
            path = work / f"{_stem(seed_name, 'seed')}{suffix}"
            path.write_bytes(seed)
            argv = target.argv(path, work, fixed)
            status, stderr = runner(argv, args.timeout, max(memory, int(target.memory_gb * (1 << 30))),
                                    work / "stderr.txt")
            if classify(status, stderr, argv[0], target.must_succeed) != "ok":
                sys.exit(f"seed {seed_name} fails {target_name} unmutated (status {status}): "
                         f"{stderr.strip()[-300:]}")
    counts = {t: collections.Counter() for t in args.targets}
    failures = []
    start = time.monotonic()
    cases = replayed_inputs(Path(args.replay), args.targets) if args.replay \
        else mutated_inputs(random.Random(args.seed), seeds, args.targets, args.inputs)
    inputs = 0
    log = open(args.log, "w", encoding="utf-8") if args.log else None
    for index, target_name, seed_name, mutators, data, suffix in cases:
        inputs += 1
        target = TARGETS[target_name]
        path = work / f"{_stem(seed_name, f'input_{index}')}{suffix}"
        path.write_bytes(data)
        argv = target.argv(path, work, fixed)
        status, stderr = runner(argv, args.timeout, max(memory, int(target.memory_gb * (1 << 30))),
                                work / "stderr.txt")
        outcome = classify(status, stderr, argv[0], target.must_succeed)
        counts[target_name][outcome] += 1
        if log:
            last = (stderr.strip().splitlines() or [""])[-1][:300]
            log.write(f"{index}\t{target_name}\t{seed_name}\t{'+'.join(mutators)}\t{outcome}\t{last}\n")
        if outcome in FAILURES:
            failures.append((index, target_name, seed_name, mutators, outcome, status, stderr))
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(path, Path(args.keep) / f"{index:05d}_{target_name}_{outcome}{suffix}")
        path.unlink()
    elapsed = time.monotonic() - start
    if log:
        log.close()

    outcomes = ("ok", "clean", *FAILURES)
    print(f"{'target':<14}" + "".join(f"{o:>10}" for o in outcomes))
    for name, counter in counts.items():
        print(f"{name:<14}" + "".join(f"{counter[o]:>10}" for o in outcomes))
    total = collections.Counter()
    for counter in counts.values():
        total.update(counter)
    print(f"{'all':<14}" + "".join(f"{total[o]:>10}" for o in outcomes))
    print(f"inputs: {inputs} in {elapsed:.1f} s ({inputs / max(elapsed, 1e-9):.1f} inputs/s, "
          f"runner {args.runner}, "
          f"seed {args.seed}, timeout {args.timeout:g} s, memory cap {args.memory_gb:g} GiB)")
    for index, target_name, seed_name, mutators, outcome, status, stderr in failures[:args.show]:
        last = (stderr.strip().splitlines() or ["(no stderr)"])[-1][:200]
        print(f"  #{index} {target_name} on {seed_name} after {'+'.join(mutators)}: {outcome} "
              f"(status {status}): "
              f"{last}")
    shutil.rmtree(work, ignore_errors=True)
    print(f"fuzz_failures: {sum(total[o] for o in FAILURES)}")


if __name__ == "__main__":
    main()
