"""The rclpy lifecycle node: a thin shell around ``AmodalPipeline`` (the only module importing rclpy).

configure: read parameters, load the model, create publishers.
activate:  subscribe (newest frame only) and start the worker thread and the diagnostics timer.
A bad frame is logged once per cause and counted by the pipeline; the node keeps going.
"""

from __future__ import annotations

import sys
from typing import Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest

from orcnn_core.errors import OrcnnError
from orcnn_ros.conversions import MessageFactories
from orcnn_ros.msg import AmodalInstance, AmodalInstanceArray
from orcnn_ros.params import NODE_NAME, NodeParams, params_from_mapping, ros_defaults
from orcnn_ros.pipeline import AmodalPipeline, FrameResult, PipelineWorker, load_predictor

INSTANCES_TOPIC = "amodal/instances"
OVERLAY_TOPIC = "amodal/overlay"
DIAGNOSTICS_TOPIC = "/diagnostics"
# Outputs are reliable so that both reliable (rviz, planners) and best-effort subscribers match.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
_LEVELS = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)


class OrcnnNode(LifecycleNode):
    """Lifecycle node publishing amodal instances with occluder hints for each input image."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, default in ros_defaults().items():
            self.declare_parameter(name, default)
        self.params: Optional[NodeParams] = None
        self.pipeline: Optional[AmodalPipeline] = None
        self.worker: Optional[PipelineWorker] = None
        self._subscription = None
        self._diagnostics_timer = None
        self._instances_pub = None
        self._overlay_pub = None
        self._diagnostics_pub = None

    def _read_params(self) -> NodeParams:
        return params_from_mapping({name: self.get_parameter(name).value for name in ros_defaults()})

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Validate parameters, load the model, create publishers."""
        try:
            self.params = self._read_params()
            predictor = load_predictor(self.params)
        except OrcnnError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        factories = MessageFactories.for_rclpy(AmodalInstanceArray, AmodalInstance, Image, RegionOfInterest)
        self.pipeline = AmodalPipeline.from_params(predictor, self.params, factories,
                                                   logger=self.get_logger())
        self.worker = PipelineWorker(self.pipeline, self._publish, self._overlay_wanted)
        self._instances_pub = self.create_lifecycle_publisher(AmodalInstanceArray, INSTANCES_TOPIC,
                                                              OUTPUT_QOS)
        self._overlay_pub = self.create_lifecycle_publisher(Image, OVERLAY_TOPIC, OUTPUT_QOS)
        self._diagnostics_pub = self.create_lifecycle_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.get_logger().info(f"configured: model {self.params.weights or self.params.model_config}, "
                               f"input {self.params.input}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Subscribe to the image topic and start processing."""
        params = self.params
        reliability = (ReliabilityPolicy.BEST_EFFORT if params.qos_reliability == "best_effort"
                       else ReliabilityPolicy.RELIABLE)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=params.qos_depth, reliability=reliability)
        msg_type = Image if params.input == "raw" else CompressedImage
        self.worker.start()
        self._subscription = self.create_subscription(msg_type, params.topic, self.worker.submit, qos)
        self._diagnostics_timer = self.create_timer(params.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(f"active: subscribed to '{self._subscription.topic_name}'")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop taking frames; publishers go inactive."""
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Release the model and publishers."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Stop everything, from any state."""
        self._stop_processing()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self.worker is not None and not self.worker.stop():
            self.get_logger().warning("pipeline worker did not stop within 5 s")

    def _release(self) -> None:
        for pub in (self._instances_pub, self._overlay_pub, self._diagnostics_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._instances_pub = self._overlay_pub = self._diagnostics_pub = None
        self.pipeline = self.worker = None

    def _overlay_wanted(self) -> bool:
        pub = self._overlay_pub
        return bool(self.params and self.params.publish_overlay and pub is not None
                    and pub.get_subscription_count() > 0)

    def _publish(self, result: FrameResult) -> None:
        self._instances_pub.publish(result.instances)
        if result.overlay is not None:
            self._overlay_pub.publish(result.overlay)

    def _publish_diagnostics(self) -> None:
        if self.pipeline is None:
            return
        level, message, values = self.pipeline.diagnostics()
        status = DiagnosticStatus(level=_LEVELS[level], name=f"{self.get_name()}: amodal pipeline",
                                  message=message, hardware_id="orcnn",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def main(args: Optional[list] = None) -> int:
    """Entry point of ``ros2 run orcnn_ros orcnn_node``."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = OrcnnNode()
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        if node.worker is not None:
            node.worker.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
