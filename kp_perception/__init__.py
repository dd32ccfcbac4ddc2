"""ROS 2 perception layer over kp_training: keypoints from point clouds and rotate-goal decoding."""
