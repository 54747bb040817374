"""Training checkpoints without pickle, written atomically.

A checkpoint ``NAME`` in the output folder is four files:

* ``NAME.safetensors`` + ``NAME.json``: the model weights and their sidecar (``save_weights``), loadable
  by ``Predictor.from_weights`` as they are;
* ``NAME.state.safetensors``: every tensor of the training state (optimizer buffers such as SGD
  momentum, the torch / CUDA RNG states, the AMP grad scaler);
* ``NAME.state.json``: every scalar (iteration, data position, optimizer hyper-parameters, scheduler,
  python / numpy RNG states, metrics).

Each file goes to a temporary name in the same folder, is fsync'ed and then ``os.replace``d, and the
``last_checkpoint`` pointer (a one-line text file naming ``NAME``) is replaced last: a crash or a failed
write at any moment leaves the previous checkpoint and pointer intact.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from orcnn_core.errors import WeightsError
from orcnn_core.fileio import (
    atomic_write,
    atomic_write_text,
    commit_file,
    fsync_dir,
    remove_stale_temporaries,
)

logger = logging.getLogger(__name__)

POINTER = "last_checkpoint"
WEIGHTS_TMP_PREFIX = ".weights-"
TEMPORARY_PATTERNS = (".*.tmp", f"{WEIGHTS_TMP_PREFIX}*")
STATE_FORMAT_VERSION = 1


def atomic_save_weights(model: torch.nn.Module, model_config: Any, path: str | Path) -> None:
    """``save_weights`` to ``path`` (+ its ``.json`` sidecar), each file replaced atomically."""
    from orcnn_core.model import save_weights

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=WEIGHTS_TMP_PREFIX, dir=path.parent) as tmp_dir:
        tmp = Path(tmp_dir) / path.name
        save_weights(model, model_config, tmp)
        sidecar = tmp.with_suffix(".json")
        for produced, final in ((tmp, path), (sidecar, path.with_suffix(".json"))):
            if produced.is_file():
                commit_file(produced, final)
    fsync_dir(path.parent)


# --------------------------------------------------------------------------------- state <-> files
def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            name = f"{index}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            index, key = name[len("optimizer."):].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for name, value in saved["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": saved["param_groups"]}


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The python, numpy, torch and CUDA generator states as (tensors, JSON-able scalars)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = cuda_state
    scalars = {"python": [version, list(internal), gauss],
               "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, scalars


def restore_rng_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    version, internal, gauss = scalars["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = scalars["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])


@dataclass
class TrainingState:
    """What ``--resume`` needs besides the weights."""

    iteration: int                       # the next iteration to run
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    rng_scalars: dict[str, Any] = field(default_factory=dict)
    grad_scaler: Optional[dict[str, Any]] = None
    extra: dict[str, Any] = field(default_factory=dict)   # data position, best metric, ...


def save_training_state(state: TrainingState, prefix: Path) -> None:
    """Write ``PREFIX.state.safetensors`` and ``PREFIX.state.json`` atomically."""
    tensors, optimizer_json = _flatten_optimizer(state.optimizer)
    tensors.update(state.rng_tensors)
    scaler_json = None
    if state.grad_scaler:
        scaler_json = {}
        for key, value in state.grad_scaler.items():
            if isinstance(value, torch.Tensor):
                tensors[f"grad_scaler.{key}"] = value.detach().cpu().reshape(-1)
            else:
                scaler_json[key] = value
    document = {
        "format_version": STATE_FORMAT_VERSION,
        "iteration": state.iteration,
        "optimizer": optimizer_json,
        "scheduler": state.scheduler,
        "rng": state.rng_scalars,
        "grad_scaler": scaler_json,
        "extra": state.extra,
    }
    text = json.dumps(document)  # fail on a non-JSON value before touching any file
    atomic_write(prefix.with_name(prefix.name + ".state.safetensors"),
                 lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_text(prefix.with_name(prefix.name + ".state.json"), text)


def load_training_state(prefix: Path) -> TrainingState:
    """Read the files ``save_training_state`` wrote; a missing or corrupt file is a WeightsError."""
    json_path = prefix.with_name(prefix.name + ".state.json")
    tensor_path = prefix.with_name(prefix.name + ".state.safetensors")
    for path in (json_path, tensor_path):
        if not path.is_file():
            raise WeightsError(f"checkpoint file missing: {path}")
    try:
        document = json.loads(json_path.read_text())
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # json and safetensors raise several unrelated types for bad files
        raise WeightsError(f"checkpoint {prefix} is corrupt: {exc}") from exc
    if document.get("format_version") != STATE_FORMAT_VERSION:
        raise WeightsError(f"{json_path}: unsupported format_version {document.get('format_version')!r}")
    scaler = None
    if document.get("grad_scaler") is not None:
        scaler = dict(document["grad_scaler"])
        for key, value in tensors.items():
            if key.startswith("grad_scaler."):
                scaler[key[len("grad_scaler."):]] = value
    return TrainingState(
        iteration=int(document["iteration"]),
        optimizer=_unflatten_optimizer(tensors, document["optimizer"]),
        scheduler=document["scheduler"],
        rng_tensors={k: v for k, v in tensors.items() if k.startswith("rng.")},
        rng_scalars=document["rng"],
        grad_scaler=scaler,
        extra=document.get("extra", {}),
    )


# ------------------------------------------------------------------------------------- checkpointer
class Checkpointer:
    """Saves and finds training checkpoints in one output folder (see the module docstring)."""

    def __init__(self, out_dir: str | Path, keep: int = 2):
        self.out_dir = Path(out_dir)
        self.keep = keep
        # A run killed while writing leaves its temporaries; nothing else ever uses these names.
        removed = remove_stale_temporaries(self.out_dir, TEMPORARY_PATTERNS)
        if removed:
            logger.info("removed %d temporary file(s) left by an interrupted run in %s", len(removed),
                        self.out_dir)

    def save(self, name: str, model: torch.nn.Module, model_config: Any, state: TrainingState,
             *, update_pointer: bool = True) -> Path:
        """Write checkpoint ``name``; then point ``last_checkpoint`` at it and prune old periodic ones."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        prefix = self.out_dir / name
        atomic_save_weights(model, model_config, prefix.with_suffix(".safetensors"))
        save_training_state(state, prefix)
        if update_pointer:
            atomic_write_text(self.out_dir / POINTER, name + "\n")
            self._prune(keep_name=name)
        logger.info("saved checkpoint %s (iteration %d)", prefix, state.iteration)
        return prefix

    def last_checkpoint(self) -> Optional[Path]:
        """Prefix of the checkpoint ``last_checkpoint`` names, or None when there is none."""
        pointer = self.out_dir / POINTER
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        prefix = self.out_dir / name
        if not prefix.with_suffix(".safetensors").is_file():
            raise WeightsError(f"{pointer} names checkpoint '{name}' but {prefix}.safetensors is missing")
        return prefix

    def load(self, prefix: Path, model: torch.nn.Module) -> TrainingState:
        """Load weights into ``model`` and return the training state saved with them."""
        from orcnn_core.model.weights import load_model_state, load_state_dict_file

        path = prefix.with_suffix(".safetensors")
        load_model_state(model, load_state_dict_file(path), path)
        return load_training_state(prefix)

    def _prune(self, keep_name: str) -> None:
        periodic = sorted(p.name[:-len(".state.json")] for p in self.out_dir.glob("model_*.state.json")
                          if p.name[len("model_"):-len(".state.json")].isdigit())
        stale = [n for n in periodic if n != keep_name][:max(0, len(periodic) - self.keep)]
        for name in stale:
            for suffix in (".safetensors", ".json", ".state.safetensors", ".state.json"):
                (self.out_dir / f"{name}{suffix}").unlink(missing_ok=True)
