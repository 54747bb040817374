"""Replay a rosbag2 through the live orcnn_node and record its results (machines with ROS 2).

    ros2 launch orcnn_ros replay.launch.py bag:=/data/cell.mcap image_topic:=/camera/image_raw \
        out_bag:=/data/cell_amodal weights:=/models/orcnn.safetensors

Starts the node (orcnn.launch.py, on simulated time), ``ros2 bag record`` of the result topic, then,
after ``start_delay`` seconds, ``ros2 bag play --clock`` of the input; when playback ends the launch
shuts down and the recorder closes the output bag. The node keeps only the newest frame (QoS depth
1), so frames arriving while it is busy are dropped, as on the robot: lower ``rate`` to process more
of them, or use ``orcnn-replay`` (no ROS needed) to process every frame.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    IncludeLaunchDescription,
    RegisterEventHandler,
    TimerAction,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PACKAGE = "orcnn_ros"
RESULT_TOPIC = "/amodal/instances"  # the node's amodal/instances in the root namespace


def generate_launch_description():
    """Arguments: bag, image_topic, out_bag, weights, config, device, rate, storage, start_delay."""
    share = get_package_share_directory(PACKAGE)
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "orcnn.launch.py")),
        launch_arguments={
            "image_topic": LaunchConfiguration("image_topic"),
            "weights": LaunchConfiguration("weights"),
            "config": LaunchConfiguration("config"),
            "device": LaunchConfiguration("device"),
            "use_sim_time": "true",  # stamps follow the bag's /clock
        }.items(),
    )
    record = ExecuteProcess(
        cmd=["ros2", "bag", "record", "-o", LaunchConfiguration("out_bag"),
             "-s", LaunchConfiguration("storage"), RESULT_TOPIC],
        output="screen",
    )
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock",
             "--rate", LaunchConfiguration("rate")],
        output="screen",
    )
    # Give the last frames time to come out of the model before the recorder is stopped.
    stop_after_play = RegisterEventHandler(OnProcessExit(
        target_action=play,
        on_exit=[TimerAction(period=3.0, actions=[EmitEvent(event=Shutdown(reason="bag played"))])],
    ))
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="input rosbag2 (folder, .db3 or .mcap)"),
        DeclareLaunchArgument("image_topic", default_value="/image",
                              description="sensor_msgs/Image topic of the bag the node subscribes to"),
        DeclareLaunchArgument("out_bag", description="output bag folder for the recorded results"),
        DeclareLaunchArgument("weights", default_value="",
                              description=".safetensors weights (empty: the params file value)"),
        DeclareLaunchArgument("config",
                              default_value=os.path.join(share, "config", "orcnn_node.yaml"),
                              description="node params YAML"),
        DeclareLaunchArgument("device", default_value="", description="auto | cpu | cuda | cuda:N"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate factor"),
        DeclareLaunchArgument("storage", default_value="sqlite3", description="sqlite3 | mcap"),
        DeclareLaunchArgument("start_delay", default_value="5.0",
                              description="seconds between starting the node and playing the bag"),
        node,
        record,
        TimerAction(period=LaunchConfiguration("start_delay"), actions=[play]),
        stop_after_play,
    ])
