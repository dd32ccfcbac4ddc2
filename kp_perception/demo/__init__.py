"""kp-demo (:mod:`.main`) and what it needs besides the node: starting ROS processes kept on this machine
(:mod:`.processes`, also used by the benchmarks and tests). Nothing here is imported by the node."""
