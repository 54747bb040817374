"""The rclpy lifecycle node: a thin shell around ``AmodalPipeline`` (the only module importing rclpy).

configure: read and validate parameters, load the model, create publishers.
activate:  subscribe (newest frame only; with ``depth``, also the depth image + camera_info through a
           message_filters synchroniser feeding ``DepthPairing``) and start the worker thread and
           the diagnostics timer.
deactivate / cleanup / shutdown: undo those, each transition logged in one line.
Parameters are declared with descriptors (ranges, read-only) and checked when set
(``orcnn_ros.params.check_update``): live ones apply to the next frame, the others are refused
while configured with a message saying so. SIGINT and SIGTERM shut the node down cleanly
(``orcnn_ros.shutdown``). A bad frame is logged once per cause and counted by the pipeline.
"""

from __future__ import annotations

import array
import sys
from typing import Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Point32, Polygon, Vector3
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField, RegionOfInterest

from orcnn_core.engine.predictor import load_predictor
from orcnn_core.errors import OrcnnError
from orcnn_ros.conversions import MessageFactories
from orcnn_ros.depth_conversions import point_cloud_fields
from orcnn_ros.depth_pairing import DepthPairing
from orcnn_ros.msg import AmodalInstance, AmodalInstanceArray
from orcnn_ros.params import (
    NODE_NAME,
    PARAMETERS,
    NodeParams,
    check_update,
    params_from_mapping,
    ros_defaults,
)
from orcnn_ros.pipeline import AmodalPipeline, FrameResult, PipelineWorker
from orcnn_ros.shutdown import ShutdownSignal, spin_until_shutdown

INSTANCES_TOPIC = "amodal/instances"
OVERLAY_TOPIC = "amodal/overlay"
POINTS_TOPIC = "amodal/points"
DEPTH_SYNC_QUEUE = 10  # depth images and camera_infos kept while waiting for their partner
DIAGNOSTICS_TOPIC = "/diagnostics"
# Outputs are reliable so that both reliable (rviz, planners) and best-effort subscribers match.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
_LEVELS = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)


def _descriptor(name: str, default: object) -> ParameterDescriptor:
    spec = PARAMETERS[name]
    descriptor = ParameterDescriptor(description=f"{spec.description} [{spec.when}]",
                                     read_only=spec.read_only)
    if spec.low is not None and not spec.low_open:
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            return descriptor
        if isinstance(default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                                     step=0)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                                  to_value=float(spec.high), step=0.0)]
    return descriptor


class OrcnnNode(LifecycleNode):
    """Lifecycle node publishing amodal instances with occluder hints for each input image."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name, default in ros_defaults().items():
            self.declare_parameter(name, default, _descriptor(name, default))
        self.params: NodeParams = self._read_params()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.pipeline: Optional[AmodalPipeline] = None
        self.worker: Optional[PipelineWorker] = None
        self._subscription = None
        self._depth_subscriptions: list = []
        self._depth_sync = None
        self._diagnostics_timer = None
        self._instances_pub = None
        self._overlay_pub = None
        self._points_pub = None
        self._diagnostics_pub = None

    def _read_params(self) -> NodeParams:
        return params_from_mapping({name: self.get_parameter(name).value for name in ros_defaults()})

    # -- parameters ----------------------------------------------------------------------------
    def _on_set_parameters(self, parameters: list) -> SetParametersResult:
        """Validate a ``ros2 param set`` like configure would; apply live ones to the next frame."""
        changes = {p.name: p.value for p in parameters}
        try:
            updated = check_update(self.params, changes, configured=self.pipeline is not None)
        except OrcnnError as exc:
            self.get_logger().warning(f"parameter change refused: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        period_changed = updated.diagnostics_period_s != self.params.diagnostics_period_s
        self.params = updated
        if self.pipeline is not None:
            self.pipeline.update_settings(updated.frame_settings())
        if period_changed and self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = self.create_timer(updated.diagnostics_period_s,
                                                        self._publish_diagnostics)
        self.get_logger().info("parameters set: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    # -- lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Validate parameters, load the model, create publishers."""
        try:
            self.params = self._read_params()
            self.params.require_model()
            predictor = load_predictor(**self.params.predictor_kwargs())
        except OrcnnError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        factories = MessageFactories.for_rclpy(AmodalInstanceArray, AmodalInstance, Image, RegionOfInterest,
                                               point=Point, vector3=Vector3, polygon=Polygon, point32=Point32)
        pairing = DepthPairing(self.params.depth_slop_s) if self.params.depth else None
        self.pipeline = AmodalPipeline(predictor, factories, self.params.frame_settings(),
                                       logger=self.get_logger(), depth_pairing=pairing)
        self.worker = PipelineWorker(self.pipeline, self._publish, self._overlay_wanted)
        self._instances_pub = self.create_lifecycle_publisher(AmodalInstanceArray, INSTANCES_TOPIC,
                                                              OUTPUT_QOS)
        self._overlay_pub = self.create_lifecycle_publisher(Image, OVERLAY_TOPIC, OUTPUT_QOS)
        if self.params.depth:
            self._points_pub = self.create_lifecycle_publisher(PointCloud2, POINTS_TOPIC, OUTPUT_QOS)
        self._diagnostics_pub = self.create_lifecycle_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        bundled = "" if self.params.weights or self.params.model_config else "the bundled demo model "
        self.get_logger().info(f"configured: {bundled}{predictor.source} on {predictor.device}, "
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
        depth_note = self._subscribe_depth(reliability) if params.depth else ""
        self._diagnostics_timer = self.create_timer(params.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(f"activated: subscribed to '{self._subscription.topic_name}' "
                               f"({params.qos_reliability}, depth {params.qos_depth}){depth_note}")
        return super().on_activate(state)

    def _subscribe_depth(self, reliability: ReliabilityPolicy) -> str:
        """Depth image + camera_info through a message_filters synchroniser into the pipeline's pairing."""
        import message_filters

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=DEPTH_SYNC_QUEUE, reliability=reliability)
        depth_topic, info_topic = self.params.depth_topics
        subscriptions = [message_filters.Subscriber(self, Image, depth_topic, qos_profile=qos),
                         message_filters.Subscriber(self, CameraInfo, info_topic, qos_profile=qos)]
        slop = self.params.depth_slop_s
        if slop > 0:
            sync = message_filters.ApproximateTimeSynchronizer(subscriptions, DEPTH_SYNC_QUEUE, slop)
        else:
            sync = message_filters.TimeSynchronizer(subscriptions, DEPTH_SYNC_QUEUE)
        sync.registerCallback(self.pipeline.depth_pairing.add)
        self._depth_subscriptions, self._depth_sync = subscriptions, sync
        names = " + ".join(f"'{sub.sub.topic_name}'" for sub in subscriptions)
        return f", depth from {names} (stamps within {slop:g} s)"

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Stop taking frames; publishers go inactive."""
        self._stop_processing()
        self.get_logger().info("deactivated: not taking frames")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Release the model and publishers."""
        self._release()
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Stop everything, from any state."""
        self._stop_processing()
        self._release()
        self.get_logger().info("shut down")
        return TransitionCallbackReturn.SUCCESS

    def _stop_processing(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        for subscription in self._depth_subscriptions:
            self.destroy_subscription(subscription.sub)
        self._depth_subscriptions, self._depth_sync = [], None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self.worker is not None and not self.worker.stop():
            self.get_logger().warning("pipeline worker did not stop within 5 s")

    def _release(self) -> None:
        for pub in (self._instances_pub, self._overlay_pub, self._points_pub, self._diagnostics_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._instances_pub = self._overlay_pub = self._points_pub = self._diagnostics_pub = None
        self.pipeline = self.worker = None

    # -- per frame -----------------------------------------------------------------------------
    def _overlay_wanted(self) -> bool:
        pub = self._overlay_pub
        return bool(self.params.publish_overlay and pub is not None and pub.get_subscription_count() > 0)

    def _publish(self, result: FrameResult) -> None:
        self._instances_pub.publish(result.instances)
        if result.overlay is not None:
            self._overlay_pub.publish(result.overlay)
        points_pub = self._points_pub
        if (self.params.publish_points and points_pub is not None and result.analysis.geometry is not None
                and points_pub.get_subscription_count() > 0):
            fields = point_cloud_fields(result.analysis)
            fields["fields"] = [PointField(name=n, offset=o, datatype=t, count=c)
                                for n, o, t, c in fields["fields"]]
            fields["data"] = array.array("B", fields["data"].tobytes())  # rclpy's uint8[] type
            points_pub.publish(PointCloud2(header=result.instances.header, **fields))

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


def _init_without_signal_handlers(args: Optional[list]) -> None:
    """``rclpy.init`` leaving SIGINT / SIGTERM to ``ShutdownSignal`` (one clean path for both)."""
    try:
        from rclpy.signals import SignalHandlerOptions
    except ImportError:  # rclpy before Humble installs only a SIGINT handler; ours replace it below
        rclpy.init(args=args)
        return
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)


def main(args: Optional[list] = None) -> int:
    """Entry point of ``ros2 run orcnn_ros orcnn_node``: exit 0 after SIGINT or SIGTERM."""
    _init_without_signal_handlers(args if args is not None else sys.argv)
    stop = ShutdownSignal().install()
    try:
        node = OrcnnNode()
    except Exception as exc:  # e.g. a params-file value outside a parameter's declared range
        print(f"orcnn_node: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.params.autostart:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        reason = spin_until_shutdown(lambda timeout: executor.spin_once(timeout_sec=timeout), stop,
                                     rclpy.ok)
        node.get_logger().info(f"{reason}: shutting down")
    finally:
        try:  # the lifecycle shutdown transition, from any state: worker stopped, publishers released
            node.trigger_shutdown()
        except Exception as exc:  # already finalized, or the context is gone: nothing left to stop
            node.get_logger().debug(f"lifecycle shutdown skipped: {exc}")
        if node.worker is not None:
            node.worker.stop()
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
        stop.restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
