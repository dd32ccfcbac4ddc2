"""KP-Net: unsupervised 3D keypoints learned through voxel reconstruction (training library).

Pure PyTorch/NumPy: nothing in this package imports ROS, so it runs on a bare GPU machine.
"""

__version__ = "0.1.0"
