"""Training loop, checkpoints and inference (``Predictor``).

``Predictor`` is imported lazily so that ``orcnn --help`` (which imports ``engine.commands``) does not
pay for importing torch.
"""

__all__ = ["Predictor"]


def __getattr__(name: str):
    if name == "Predictor":
        from orcnn_core.engine.predictor import Predictor
        return Predictor
    raise AttributeError(f"module 'orcnn_core.engine' has no attribute {name!r}")
