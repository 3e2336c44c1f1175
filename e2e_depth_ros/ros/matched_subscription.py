"""A subscription whose reliability follows the topic's publishers (the rclpy side of qos).

rosbag2 and RViz look at the QoS the publishers offer before subscribing; this does the same
and re-checks on every ``recheck()`` (the node calls it from a timer), re-creating the
subscription when the publishers' reliability changes. The choice is logged once when it
changes; a mismatch (see ``qos.choose_input_qos``) is warned once per distinct message.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from e2e_depth_ros.ros.qos import BEST_EFFORT, RELIABLE, InputQos, choose_input_qos

_NAMES = {ReliabilityPolicy.RELIABLE: RELIABLE, ReliabilityPolicy.BEST_EFFORT: BEST_EFFORT}
_POLICIES = {name: policy for policy, name in _NAMES.items()}


def offered_reliabilities(node, topic_name: str) -> list[str]:
    """``reliable`` / ``best_effort`` / ``unknown`` for each publisher of the topic."""
    return [_NAMES.get(info.qos_profile.reliability, "unknown")
            for info in node.get_publishers_info_by_topic(topic_name)]


def qos_profile(choice: InputQos) -> QoSProfile:
    """Keep last ``depth``, volatile (matches volatile and transient-local publishers)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=choice.depth,
                      reliability=_POLICIES[choice.reliability],
                      durability=DurabilityPolicy.VOLATILE)


class MatchedSubscription:
    """``node.create_subscription`` with the reliability chosen from the publishers.

    ``mode`` is an ``input_qos`` value (``auto``, ``reliable``, ``best_effort``,
    ``sensor_data``) and may be changed between re-checks; ``depth`` is the keep-last depth.
    """

    def __init__(self, node, msg_type, topic: str, callback, *, mode: str,
                 depth: int = 1) -> None:
        self._node = node
        self._msg_type = msg_type
        self._topic = topic
        self._callback = callback
        self.mode = mode
        self.depth = depth
        self.choice: InputQos | None = None
        self._subscription = None
        self._warned: set[str] = set()
        resolve = getattr(node, "resolve_topic_name", None)  # rclpy >= Humble
        self.topic_name = resolve(topic) if resolve else topic
        self.recheck()

    def recheck(self) -> InputQos:
        """Choose again from the current publishers; re-subscribe if the QoS changes."""
        return self.apply(self.choose())

    def choose(self) -> InputQos:
        """The QoS the current publishers call for (nothing changes yet)."""
        return choose_input_qos(self.mode, offered_reliabilities(self._node, self.topic_name),
                                depth=self.depth)

    def changes(self, choice: InputQos) -> bool:
        """Whether applying ``choice`` needs a new subscription."""
        return self.choice is None or choice.key != self.choice.key

    def apply(self, choice: InputQos, *, recreate: bool = False) -> InputQos:
        """Subscribe with ``choice`` (anew if its QoS differs, or if ``recreate``)."""
        logger = self._node.get_logger()
        changed = self.changes(choice)
        if recreate or changed:
            if self._subscription is not None:
                self._node.destroy_subscription(self._subscription)
            self._subscription = self._node.create_subscription(
                self._msg_type, self._topic, self._callback, qos_profile(choice))
            self.topic_name = self._subscription.topic_name
        if changed:
            logger.info(f"{self.topic_name}: subscribed {choice.reliability.replace('_', '-')}"
                        f", keep last {choice.depth} ({choice.message})")
        if choice.mismatch and choice.message not in self._warned:
            self._warned.add(choice.message)
            logger.warning(f"{self.topic_name}: QoS mismatch: {choice.message}")
        self.choice = choice
        return choice

    def publisher_count(self) -> int:
        """Publishers the current subscription has matched (0 while none or re-subscribing)."""
        return self._subscription.get_publisher_count() if self._subscription else 0

    def describe(self) -> str:
        """One line for the diagnostics: the QoS in use and why."""
        choice = self.choice
        return (f"{choice.reliability}, keep last {choice.depth} ({choice.message})"
                if choice else "not subscribed")

    def destroy(self) -> None:
        if self._subscription is not None:
            self._node.destroy_subscription(self._subscription)
            self._subscription = None
