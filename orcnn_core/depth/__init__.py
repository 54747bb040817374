"""Depth and 3D: aligned depth images, pinhole cameras and each instance's place in space.

* ``camera``: ``CameraIntrinsics`` (fx, fy, cx, cy in pixels) and the camera files ``orcnn predict
  --depth`` and ``orcnn bag-from-images --depth`` read;
* ``depth_io``: depth PNG files (uint16 millimetres, 0 = no reading) and ``DepthFrame`` (a depth
  image in metres with the camera that took it), with the checks that make depth usable or not;
* ``geometry``: back-projection, robust plane fit, footprint on a plane (pure numpy);
* ``instances3d``: the per-frame 3D step of ``orcnn_core.analysis`` (``Geometry3D``);
* ``evidence``: depth evidence of which of two touching objects is in front (for the layering).

Frame convention everywhere: the camera's optical frame (x right, y down, z forward along the
optical axis), metres; pixel (u, v) is column u, row v, with integer coordinates at pixel centres
(the ROS ``camera_info`` / OpenCV convention).
"""
