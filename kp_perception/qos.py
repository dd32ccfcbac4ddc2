"""The node's cloud subscription and its QoS.

``qos.reliability``: ``reliable`` or ``best_effort`` as asked; ``auto`` starts reliable (large clouds arrive whole)
and switches to best effort when a best-effort publisher appears on the topic, which a reliable subscription can
never receive from. Clouds lost in transport are counted for /diagnostics where the middleware reports them.
"""

from __future__ import annotations

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

from .callback_guard import guarded


class CloudSubscription:
    """The subscription of ``node`` to ``topic`` for ``on_cloud``, with the QoS the parameters ask for.

    Args:
        get: a parameter's value by name (``qos.reliability``, ``qos.depth``).
        stats: :class:`kp_perception.diagnostics.PerceptionStats` (clouds lost).
        failures: :class:`kp_perception.callback_guard.CallbackFailures` (the event callbacks are guarded).
    """

    def __init__(self, node, topic: str, on_cloud, callback_group, get, stats, failures):
        self.node = node
        self.topic = topic
        self._on_cloud = on_cloud
        self._group = callback_group
        self._get = get
        self._stats = stats
        self.failures = failures
        self.subscription = None
        self.reliability = ReliabilityPolicy.RELIABLE

    def _choice(self) -> str:
        return str(self._get("qos.reliability")).lower()

    def open(self) -> None:
        self._subscribe(ReliabilityPolicy.BEST_EFFORT if self._choice() == "best_effort" else ReliabilityPolicy.RELIABLE)

    def close(self) -> None:
        if self.subscription is not None:
            self.node.destroy_subscription(self.subscription)
            self.subscription = None

    def describe(self) -> str:
        """"reliable, depth 2" or "best effort, depth 2"."""
        name = "reliable" if self.reliability == ReliabilityPolicy.RELIABLE else "best effort"
        return f"{name}, depth {self._get('qos.depth')}"

    def _subscribe(self, reliability) -> None:
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(self._get("qos.depth")), reliability=reliability,
                         durability=DurabilityPolicy.VOLATILE)
        events = SubscriptionEventCallbacks(message_lost=self._on_message_lost,
                                            incompatible_qos=self._on_incompatible_qos)
        try:
            self.subscription = self.node.create_subscription(
                PointCloud2, self.topic, self._on_cloud, qos, callback_group=self._group, event_callbacks=events)
        except Exception:  # an rmw without the message-lost event: counts stay at 0
            self.subscription = self.node.create_subscription(
                PointCloud2, self.topic, self._on_cloud, qos, callback_group=self._group,
                event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos))
        self.reliability = reliability

    @guarded()
    def _on_message_lost(self, info) -> None:
        self._stats.clouds_lost(info.total_count_change)

    @guarded()
    def _on_incompatible_qos(self, info) -> None:
        if self._choice() == "auto":
            return  # check_publishers switches to best effort on the next timer tick
        self.node.get_logger().warning(
            f"a publisher on {self.node.resolve_topic_name(self.topic)} offers QoS this node's subscription "
            f"({self.describe()}) cannot match, so none of its clouds arrive: set qos.reliability to "
            "best_effort (or auto), or make the publisher reliable", throttle_duration_sec=30.0)

    def check_publishers(self) -> None:
        """``auto``: switch to best effort (which matches both kinds) when a best-effort publisher appears."""
        if self.subscription is None or self.reliability != ReliabilityPolicy.RELIABLE or self._choice() != "auto":
            return
        infos = self.node.get_publishers_info_by_topic(self.node.resolve_topic_name(self.topic))
        best_effort = [i for i in infos if i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT]
        if not best_effort:
            return
        self.close()
        self._subscribe(ReliabilityPolicy.BEST_EFFORT)
        names = ", ".join(sorted({f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in best_effort}))
        self.node.get_logger().warning(
            f"qos.reliability auto: {names} publishes {self.node.resolve_topic_name(self.topic)} best effort; "
            "subscribed best effort now (clouds over ~0.5 MB may be lost; a reliable publisher avoids that)")
