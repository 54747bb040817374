"""ORCNN core: amodal instance segmentation (Occlusion R-CNN) without any ROS dependency."""

__version__ = "0.1.0"
