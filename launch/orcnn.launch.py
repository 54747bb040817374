"""Launch orcnn_node (a lifecycle node that configures and activates itself: `autostart` parameter).

    ros2 launch orcnn_ros orcnn.launch.py image_topic:=/camera/color/image_raw \
        weights:=/models/orcnn.safetensors device:=cuda:0
    # with an RGB-D camera (depth aligned to the colour image): 3D per instance
    ros2 launch orcnn_ros orcnn.launch.py image_topic:=/camera/color/image_raw depth:=true \
        depth_topic:=/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/aligned_depth_to_color/camera_info

Arguments left empty keep the value from the params file (`config`).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchDescription

PACKAGE = "orcnn_ros"
NODE_NAME = "orcnn_node"


def _launch_setup(context, *args, **kwargs):
    image_topic = LaunchConfiguration("image_topic").perform(context)
    weights = LaunchConfiguration("weights").perform(context)
    device = LaunchConfiguration("device").perform(context)
    depth = LaunchConfiguration("depth").perform(context).lower()
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1", "yes")
    # Only non-empty arguments override the params file.
    overrides = {"use_sim_time": use_sim_time}
    if weights:
        overrides["weights"] = weights
    if device:
        overrides["device"] = device
    if depth:
        overrides["depth"] = depth in ("true", "1", "yes")
    node = LifecycleNode(
        package=PACKAGE,
        executable=NODE_NAME,
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace").perform(context),
        parameters=[LaunchConfiguration("config").perform(context), overrides],
        remappings=[("image", image_topic), ("image/compressed", image_topic.rstrip("/") + "/compressed"),
                    ("depth/image", LaunchConfiguration("depth_topic").perform(context)),
                    ("depth/camera_info", LaunchConfiguration("camera_info_topic").perform(context))],
        output="screen",
    )
    return [node]


def generate_launch_description():
    """Arguments: image_topic, weights, config, device, namespace, use_sim_time, depth, depth_topic,
    camera_info_topic."""
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", "orcnn_node.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="input sensor_msgs/Image topic (its /compressed is used "
                                          "when the `input` parameter is compressed)"),
        DeclareLaunchArgument("weights", default_value="",
                              description=".safetensors weights file (empty: keep the params file value)"),
        DeclareLaunchArgument("config", default_value=default_config,
                              description="params YAML with an orcnn_node: ros__parameters: section"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto | cpu | cuda | cuda:N (empty: keep the params file value)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock time"),
        DeclareLaunchArgument("depth", default_value="",
                              description="true: also subscribe to depth_topic + camera_info_topic for 3D "
                                          "(empty: keep the params file value)"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/aligned_depth_to_color/image_raw",
                              description="depth image aligned to the colour image (16UC1 mm or 32FC1 m)"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/aligned_depth_to_color/camera_info",
                              description="camera_info of that depth image"),
        OpaqueFunction(function=_launch_setup),
    ])
