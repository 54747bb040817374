"""Scene layering: duplicates removed, one front/behind decision per overlapping pair, an acyclic
front-to-back order, and masks and an occlusion graph that follow it (docs/layering.md)."""

from orcnn_core.layering.config import LayeringConfig
from orcnn_core.layering.crops import InstanceCrops
from orcnn_core.layering.evidence import EvidenceTerm, PairContext
from orcnn_core.layering.graph import layered_occlusion_graph
from orcnn_core.layering.scene import SceneLayering, layer_instances, layer_prediction

__all__ = ["EvidenceTerm", "InstanceCrops", "LayeringConfig", "PairContext", "SceneLayering",
           "layer_instances", "layer_prediction", "layered_occlusion_graph"]
