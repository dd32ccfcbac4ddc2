"""The middleware settings kp_perception_node runs with.

Fast DDS (ROS 2's default middleware) reads its XML profiles from the file named by ``FASTDDS_DEFAULT_PROFILES_FILE``
when the first participant is created. The node ships one (``middleware/fastdds_profile.xml``): its readers answer a
writer's heartbeat at once instead of after 5 ms, which repairs the lost fragments of a large cloud sooner (the
reason and the figures are in the file). A profile the user names is always kept.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

FASTDDS_PROFILE = Path(__file__).resolve().parent / "middleware" / "fastdds_profile.xml"
PROFILES_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
FASTDDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def use_node_profile(environ: MutableMapping[str, str] = os.environ) -> str:
    """Point Fast DDS at the node's profile unless the user chose one (call before ``rclpy.init``).

    Returns a line for the node's log: which profile is in effect and why.
    """
    rmw = environ.get("RMW_IMPLEMENTATION") or FASTDDS_RMWS[0]  # Fast DDS when none is chosen
    if rmw not in FASTDDS_RMWS:
        return f"middleware {rmw}: no Fast DDS profile"
    chosen = environ.get(PROFILES_VARIABLE)
    if chosen:
        return f"Fast DDS profile {chosen} (from {PROFILES_VARIABLE})"
    environ[PROFILES_VARIABLE] = str(FASTDDS_PROFILE)
    return f"Fast DDS profile {FASTDDS_PROFILE} (the node's own; set {PROFILES_VARIABLE} to use yours)"
