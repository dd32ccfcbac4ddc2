"""The run-time core of KP-Net: what the ROS node needs and training builds on.

Grid geometry and frames (``geometry``), point binning (``voxelize``), grid placement on a cloud
(``placement``), the models (``models``), checkpoints (``checkpoint``), devices (``devices``) and the
rotate-goal's axis (``goals``). Pure PyTorch/NumPy/SciPy: no ROS, no plotting, no training dependencies.
"""

__version__ = "0.1.0"
