"""The model variants of the paper as data: which mask heads exist, which losses train them.

A variant is a ``VariantSpec`` looked up by the config value ``ModelConfig.variant``; there is one
model class for all of them (and one ensemble wrapper for ``merged``).
"""

from __future__ import annotations

from dataclasses import dataclass

from orcnn_core.errors import ConfigError


@dataclass(frozen=True)
class VariantSpec:
    """What one variant builds and trains."""

    name: str
    mask_branches: tuple          # subset of ("amodal", "visible"); each a head + predictor
    mask_losses: tuple            # subset of ("amodal", "visible", "invisible")
    detach_visible: bool = False  # L_V / L_IV reach neither the amodal head nor the RoI features
    box_target: str = "amodal"    # boxes the RPN and box head regress: "amodal" | "visible"
    members: tuple = ()           # ensemble: names of member variants
    description: str = ""


VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec for spec in (
        VariantSpec("orcnn", ("amodal", "visible"), ("amodal", "visible", "invisible"),
                    description="ORCNN: amodal + visible heads, occlusion = amodal - relu(visible)"),
        VariantSpec("no_iv", ("amodal", "visible"), ("amodal", "visible"),
                    description="ORCNN without the invisible-mask loss L_IV"),
        VariantSpec("no_v", ("amodal", "visible"), ("amodal", "invisible"),
                    description="ORCNN without the visible-mask loss L_V"),
        VariantSpec("independent", ("amodal", "visible"), ("amodal", "visible", "invisible"),
                    detach_visible=True,
                    description="ORCNN whose L_V and L_IV gradients stop before the amodal head "
                                "and the RoI features"),
        VariantSpec("arcnn", ("amodal",), ("amodal",),
                    description="Mask R-CNN on amodal masks and boxes (visible = amodal)"),
        VariantSpec("mrcnn", ("visible",), ("visible",), box_target="visible",
                    description="Mask R-CNN on visible masks and visible boxes (amodal = visible)"),
        VariantSpec("merged", (), ("amodal", "visible"), members=("arcnn", "mrcnn"),
                    description="mergedAMRCNN: arcnn and mrcnn results matched by mask IoU"),
    )
}

LOSS_NAMES = {"amodal": "loss_amodal_mask", "visible": "loss_visible_mask",
              "invisible": "loss_invisible_mask"}
BOX_LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")


def get_variant(name: str) -> VariantSpec:
    """The VariantSpec called ``name``; ConfigError listing the known ones otherwise."""
    if name not in VARIANTS:
        raise ConfigError(f"model.variant: unknown variant {name!r} (known: {', '.join(VARIANTS)})")
    return VARIANTS[name]


def loss_names(name: str) -> set[str]:
    """Exactly the loss-dict keys a model of variant ``name`` returns in training mode."""
    spec = get_variant(name)
    return set(BOX_LOSS_NAMES) | {LOSS_NAMES[k] for k in spec.mask_losses}
