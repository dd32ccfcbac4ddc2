"""ROS 2 perception layer over kp_core: keypoints from point clouds and rotate-goal decoding."""
