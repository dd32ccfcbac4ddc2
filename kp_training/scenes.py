"""A known scene for demos and tests: the built-in mug at a random pose on a table, in metres, seen by
simulated depth sensors (whole: four fused cameras; partial: one), with its ground truth."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from kp_core.goals import rotate_about_vertical
from kp_core.goals import vertical_axis_of

from .sensor import SensorConfig, SensorSimulator, surface_samples
from .shapes import load_shape


@dataclass
class Scene:
    """The mug (solid samples, metres, world frame) at its pose on a table, and its sensor clouds."""

    solid: np.ndarray  # (N, 3) every solid sample of the posed mug (ground truth)
    axis: np.ndarray  # (3,) a point on the mug's own vertical axis (through its solid's centroid: vertical_axis_of)
    clouds: dict  # name -> (M, 3) sensor cloud in the world frame ("whole": 4 fused cameras, "partial": one)
    cameras: dict  # name -> (C, 3) camera positions in the world frame


def make_scene(seed: int = 0, max_points: int = 120_000) -> Scene:
    """The built-in mug in metres at a random yaw on a table (world frame, z up), seen by simulated depth
    sensors (:mod:`kp_training.sensor`: surface samples, z-buffer visibility, depth noise, uneven density,
    a few outliers) as a whole cloud fused from four cameras and as one camera's view."""
    shape = load_shape("mug")
    unit = shape.normalization["mesh_units_per_grid_unit"]
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-math.pi, math.pi)
    position = np.array([0.55, -0.15, 0.75]) + rng.uniform(-0.05, 0.05, size=3)

    def to_world(normalized: np.ndarray) -> np.ndarray:
        return rotate_about_vertical(normalized * unit, yaw, np.zeros(3)) + position

    surface = surface_samples(shape.points, count=max(60_000, max_points))
    clouds, cameras = {}, {}
    for name, whole in (("whole", 1.0), ("partial", 0.0)):
        simulator = SensorSimulator(surface, unit, SensorConfig(whole_fraction=whole))
        sim = simulator.clouds(surface[None], torch.Generator().manual_seed(seed * 7 + int(whole)))
        points = sim.points[0][sim.mask[0]].double().numpy()
        if len(points) > max_points:
            points = points[rng.choice(len(points), size=max_points, replace=False)]
        clouds[name] = to_world(points)
        cameras[name] = to_world(sim.cameras[0][sim.camera_mask[0]].double().numpy())
    solid = to_world(shape.points.numpy().astype(np.float64))
    axis = np.append(vertical_axis_of(solid), position[2])
    return Scene(solid=solid, axis=axis, clouds=clouds, cameras=cameras)
