"""Headless matplotlib figures for the evaluation (PNG): reconstructions (paper Fig. 5), interpolation
curves (Fig. 6), an interpolation strip (Fig. 7), the goal IoU over the circle and the equivariance error.

Everything is drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, so no display and no
global pyplot state are involved. Voxel grids are rendered as a 3-D scatter of their *surface* voxels
(occupied voxels with an empty 6-neighbour), subsampled, coloured by height: fast even for 64^3 grids.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mpl_toolkits.mplot3d import Axes3D  # noqa: E402,F401  (registers the 3-D projection)

from kp_core.geometry import voxel_centers  # noqa: E402

METHOD_STYLES = {
    "KP-Net": {"color": "tab:blue", "linestyle": "-"},
    "KP-Net (Interp.)": {"color": "tab:green", "linestyle": "--"},
    "CNN-Net": {"color": "tab:red", "linestyle": "-."},
    "KP-Net (compared)": {"color": "tab:purple", "linestyle": ":"},
}
METRIC_LABELS = {
    "iou": "IoU (higher is better)",
    "bce": "BCE (lower is better)",
    "chamfer": "Chamfer, paper convention (lower is better)",
    "distance": "mean NN distance [voxels] (lower is better)",
}
VIEW = {"elev": 22.0, "azim": -55.0}
MAX_SCATTER_POINTS = 5000


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def surface_points(grid: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
    """Centres of the surface voxels of one grid.

    Args:
        grid: (G, G, G) or (1, G, G, G) occupancy (probabilities, 0/1 or bools).

    Returns:
        (N, 3) float32 array in the grid frame: occupied voxels with at least one empty 6-neighbour (voxels
        on the cube's border count as surface).
    """
    occ = grid.reshape(grid.shape[-3:])
    occ = occ if occ.dtype == torch.bool else occ > threshold
    empty = (~occ).float()[None, None]
    padded = F.pad(empty, (1, 1, 1, 1, 1, 1), value=1.0)
    kernel = torch.zeros(1, 1, 3, 3, 3, device=occ.device)
    kernel[0, 0, 1, 1, :] = kernel[0, 0, 1, :, 1] = kernel[0, 0, :, 1, 1] = 1.0
    kernel[0, 0, 1, 1, 1] = 0.0
    empty_neighbours = F.conv3d(padded, kernel)[0, 0]
    surface = occ & (empty_neighbours > 0)
    centres = voxel_centers(occ.shape[-1], device=occ.device)
    return centres[torch.nonzero(surface)].cpu().numpy().astype(np.float32)


def keypoint_colors(k: int) -> np.ndarray:
    """(k, 4) RGBA colours, one per keypoint index, the same in every figure."""
    if k <= 20:
        return matplotlib.colormaps["tab20"](np.arange(k))
    return matplotlib.colormaps["hsv"](np.linspace(0.0, 1.0, k, endpoint=False))


def _setup_3d(ax, title: str | None = None) -> None:
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_zlim(-1, 1)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(**VIEW)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])
    ax.xaxis.pane.set_alpha(0.05)
    ax.yaxis.pane.set_alpha(0.05)
    ax.zaxis.pane.set_alpha(0.05)
    if title:
        ax.set_title(title, fontsize=9)


def draw_voxels(ax, grid: torch.Tensor | None, title: str | None = None, cmap: str = "viridis",
                alpha: float = 0.9, max_points: int = MAX_SCATTER_POINTS, seed: int = 0) -> None:
    """Scatter the surface voxels of ``grid`` ((G, G, G) or (1, G, G, G)) on a 3-D axis, coloured by height."""
    _setup_3d(ax, title)
    if grid is None:
        return
    pts = surface_points(grid)
    if len(pts) == 0:
        ax.text(0, 0, 0, "empty", ha="center", fontsize=8)
        return
    if len(pts) > max_points:
        pts = pts[np.random.default_rng(seed).choice(len(pts), max_points, replace=False)]
    size = 2.0 if len(pts) > 2000 else 4.0
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=pts[:, 2], cmap=cmap, vmin=-1, vmax=1, s=size, alpha=alpha,
               depthshade=True, linewidths=0)


def draw_keypoints(ax, keypoints: torch.Tensor | np.ndarray, grid: torch.Tensor | None = None,
                   title: str | None = None, max_points: int = 2500) -> None:
    """Keypoints ((K, 3), grid frame) coloured per index, over a faint grey rendering of ``grid``."""
    _setup_3d(ax, title)
    if grid is not None:
        pts = surface_points(grid)
        if len(pts) > max_points:
            pts = pts[np.random.default_rng(0).choice(len(pts), max_points, replace=False)]
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c="0.5", s=1.5, alpha=0.18, linewidths=0, depthshade=False)
    kp = keypoints.detach().cpu().numpy() if isinstance(keypoints, torch.Tensor) else np.asarray(keypoints)
    ax.scatter(kp[:, 0], kp[:, 1], kp[:, 2], c=keypoint_colors(len(kp)), s=36, edgecolors="k", linewidths=0.4,
               depthshade=False)


def reconstruction_figure(path, ground_truth: list, keypoints: list | None = None, kp_recon: list | None = None,
                          cnn_recon: list | None = None, row_labels: list[str] | None = None) -> Path:
    """Paper Fig. 5: per example a row of ground truth / keypoints / KP-Net / CNN-Net reconstructions.

    Args:
        ground_truth: grids ((1, G, G, G) or (G, G, G)), one per row.
        keypoints: (K, 3) keypoints per row, or None to leave the column out; same for the reconstructions
            (probability grids).
        row_labels: optional text per row (e.g. the augmentation).
    """
    columns = [("a) ground truth", "gt")]
    if keypoints is not None:
        columns.append(("b) keypoints", "kp"))
    if kp_recon is not None:
        columns.append(("c) KP-Net", "kpr"))
    if cnn_recon is not None:
        columns.append(("d) CNN-Net", "cnn"))
    rows = len(ground_truth)
    fig = Figure(figsize=(3.0 * len(columns), 3.0 * rows))
    for r in range(rows):
        for c, (title, key) in enumerate(columns):
            ax = fig.add_subplot(rows, len(columns), r * len(columns) + c + 1, projection="3d")
            head = title if r == 0 else None
            if key == "gt":
                draw_voxels(ax, ground_truth[r], head)
                if row_labels:
                    ax.text2D(0.0, 0.0, row_labels[r], transform=ax.transAxes, fontsize=7)
            elif key == "kp":
                draw_keypoints(ax, keypoints[r], ground_truth[r], head)
            elif key == "kpr":
                draw_voxels(ax, kp_recon[r], head)
            else:
                draw_voxels(ax, cnn_recon[r], head)
    fig.subplots_adjust(wspace=0.02, hspace=0.05)
    return _save(fig, path)


def interpolation_strip(path, angles_deg: list[float], rows: dict[str, list]) -> Path:
    """Paper Fig. 7: one row per method (e.g. ground truth, KP-Net, CNN-Net), one column per angle.

    Args:
        angles_deg: the columns' rotation angles.
        rows: method name -> one grid per angle (None entries are left blank).
    """
    names = list(rows)
    fig = Figure(figsize=(2.4 * len(angles_deg) + 0.6, 2.4 * len(names)))
    for r, name in enumerate(names):
        for c, angle in enumerate(angles_deg):
            ax = fig.add_subplot(len(names), len(angles_deg), r * len(angles_deg) + c + 1, projection="3d")
            draw_voxels(ax, rows[name][c], f"{angle:.1f} deg" if r == 0 else None, max_points=3000)
            if c == 0:
                ax.text2D(-0.15, 0.5, name, transform=ax.transAxes, rotation=90, va="center", fontsize=10)
    fig.subplots_adjust(wspace=0.0, hspace=0.05)
    return _save(fig, path)


def plot_interpolation(path, angles_deg: np.ndarray, curves: dict[str, dict[str, np.ndarray]],
                       metrics: tuple[str, ...] = ("iou", "bce", "chamfer"), title: str | None = None,
                       spread: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
    """Paper Fig. 6: metric against rotation angle, one line per method, one panel per metric.

    Args:
        angles_deg: (A,) angles.
        curves: method -> metric -> (A,) values (the mean when ``spread`` is given).
        spread: optional method -> metric -> (A,) standard deviation, drawn as a band.
    """
    fig = Figure(figsize=(5.0 * len(metrics), 3.8))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for method, values in curves.items():
            if metric not in values:
                continue
            style = METHOD_STYLES.get(method, {})
            y = np.asarray(values[metric], dtype=float)
            ax.plot(angles_deg, y, label=method, linewidth=1.8, **style)
            if spread is not None and method in spread and metric in spread[method]:
                s = np.asarray(spread[method][metric], dtype=float)
                ax.fill_between(angles_deg, y - s, y + s, color=style.get("color"), alpha=0.18, linewidth=0)
        ax.set_xlabel("rotation angle psi [deg]")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
        if metric == "iou":
            ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]), top=1.0)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_circle(path, angles_deg: np.ndarray, iou: np.ndarray, mean: np.ndarray | None = None,
                std: np.ndarray | None = None) -> Path:
    """KP-Net goal IoU of ``decode(R_z(psi) f(X))`` over the whole circle, base pose and pose average."""
    fig = Figure(figsize=(7.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(angles_deg, iou, color="tab:blue", linewidth=1.8, label="KP-Net, base pose")
    if mean is not None:
        ax.plot(angles_deg, mean, color="tab:purple", linewidth=1.5, linestyle="--", label="KP-Net, mean over random poses")
        if std is not None:
            ax.fill_between(angles_deg, mean - std, mean + std, color="tab:purple", alpha=0.15, linewidth=0)
    ax.set_xlabel("rotation angle psi [deg]")
    ax.set_ylabel("IoU against the rotated shape")
    ax.set_xticks(np.arange(0, 361, 45))
    ax.set_xlim(0, 360)
    ax.set_ylim(top=1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_sensor_goal(path, angles_deg: np.ndarray, curves: dict[str, dict[str, np.ndarray]]) -> Path:
    """Goal IoU over psi on sensor-like clouds: one panel per kind of cloud (whole, single view), one line
    per model, the targets of the rotate-goal issue as dotted lines."""
    kinds = list(next(iter(curves.values())))
    fig = Figure(figsize=(5.2 * len(kinds), 3.6))
    colours = ["tab:blue", "tab:gray", "tab:orange", "tab:green"]
    for col, kind in enumerate(kinds):
        ax = fig.add_subplot(1, len(kinds), col + 1)
        for (name, per_kind), colour in zip(curves.items(), colours):
            iou = per_kind[kind]
            ax.plot(angles_deg, iou, marker="o", markersize=3, color=colour, linewidth=1.6,
                    label=f"{name} (mean {iou.mean():.2f}, min {iou.min():.2f})")
        ax.axhline(0.85 if kind == "whole" else 0.65, color="k", linestyle=":", linewidth=1,
                   label="target" + (" (every psi)" if kind == "whole" else " (mean)"))
        ax.set_title(f"{kind} clouds" if kind == "whole" else "single-view clouds", fontsize=10)
        ax.set_xlabel("goal angle psi [deg]")
        ax.set_ylabel("goal IoU")
        ax.set_xticks(np.arange(0, 361, 45))
        ax.set_xlim(0, 360)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def plot_training_curve(path, rows: list[dict], title: str = "", stages: list[tuple[float, str]] = ()) -> Path:
    """Time to quality of a run (its ``log.csv`` rows): validation IoU and the per-epoch goal IoU against
    minutes of training step time, and the yaw error (degrees, right axis) where the log has it. ``stages``:
    (start minute, name) of a recipe's stages, drawn as vertical lines."""
    minutes = np.array([float(r["wall_s"]) for r in rows]) / 60.0
    fig = Figure(figsize=(7.0, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    series = [("val_iou", "reconstruction IoU (validation pairs)", "tab:blue", "-"),
              ("val_goal_whole_mean", "goal IoU, whole clouds (mean over psi)", "tab:green", "-"),
              ("val_goal_whole_min", "goal IoU, whole clouds (min over psi)", "tab:green", ":"),
              ("val_goal_single_mean", "goal IoU, single views (mean over psi)", "tab:orange", "-"),
              ("val_goal_single_min", "goal IoU, single views (min over psi)", "tab:orange", ":")]
    for key, label, colour, style in series:
        values = [r.get(key) for r in rows]
        if all(v not in (None, "") for v in values):
            ax.plot(minutes, [float(v) for v in values], color=colour, linestyle=style, linewidth=1.6, label=label)
    handles, labels = ax.get_legend_handles_labels()
    yaw = [("val_yaw_whole_p90_deg", "yaw error p90, whole clouds [deg]", "tab:purple"),
           ("val_yaw_single_p90_deg", "yaw error p90, single views [deg]", "tab:red")]
    present = [(k, label, c) for k, label, c in yaw if all(r.get(k) not in (None, "") for r in rows)]
    if present:
        right = ax.twinx()
        for key, label, colour in present:
            right.plot(minutes, [float(r[key]) for r in rows], color=colour, linestyle="--", linewidth=1.2, label=label)
        right.set_ylabel("yaw error [deg]")
        right.set_ylim(0, 180)
        extra = right.get_legend_handles_labels()
        handles, labels = handles + extra[0], labels + extra[1]
    for start, name in stages:
        ax.axvline(start, color="0.4", linewidth=0.8)
        ax.text(start, 0.02, f" {name}", fontsize=7, color="0.3")
    ax.set_xlabel("training step time [min]")
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_equivariance(path, per_keypoint: dict[str, np.ndarray]) -> Path:
    """Mean equivariance error per keypoint index (voxels), one bar group per transform family."""
    modes = list(per_keypoint)
    k = len(next(iter(per_keypoint.values())))
    fig = Figure(figsize=(min(12.0, max(6.0, 0.12 * k * len(modes) + 2.0)), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(modes), 1)
    colors = {"rotation": "tab:blue", "scale": "tab:orange", "rotation+scale": "tab:gray"}
    for i, mode in enumerate(modes):
        ax.bar(np.arange(k) + (i - (len(modes) - 1) / 2) * width, per_keypoint[mode], width, label=mode,
               color=colors.get(mode))
    ax.set_xlabel("keypoint index")
    ax.set_ylabel("|f(phi(X)) - phi(f(X))| [voxels]")
    ax.set_xticks(np.arange(k))
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def demo_snapshot(path, title: str, cloud: np.ndarray, keypoints: np.ndarray, goals: list[dict],
                  center: np.ndarray) -> Path:
    """kp-demo's picture of one scene: the input cloud with its keypoints, then each goal's voxels (blue) over
    the ground truth (green) with the rotated keypoints. ``goals``: dicts with angle (rad), iou, points,
    truth and keypoints ((N, 3) metric arrays); ``center``: the point the view centres on."""
    panels = 1 + len(goals)
    fig = Figure(figsize=(4.2 * panels, 4.4))
    colours = keypoint_colors(len(keypoints))
    rng = np.random.default_rng(0)

    def scatter(ax, pts, **kw):
        if len(pts) > 6000:
            pts = pts[rng.choice(len(pts), 6000, replace=False)]
        if len(pts):
            ax.scatter(*(pts - center).T, **kw)

    span = max(np.abs(cloud - center).max(), 1e-3) * 1.1
    ax = fig.add_subplot(1, panels, 1, projection="3d")
    scatter(ax, cloud, s=0.4, c="0.55", alpha=0.5, depthshade=False)
    ax.scatter(*(keypoints - center).T, s=28, c=colours, edgecolors="k", linewidths=0.4, depthshade=False)
    ax.set_title(f"{title}: cloud ({len(cloud)} pts) + keypoints", fontsize=9)
    axes = [ax]
    for i, goal in enumerate(goals):
        ax = fig.add_subplot(1, panels, 2 + i, projection="3d")
        scatter(ax, goal["truth"], s=0.3, c="tab:green", alpha=0.15, depthshade=False)
        scatter(ax, goal["points"], s=0.6, c="tab:blue", alpha=0.35, depthshade=False)
        ax.scatter(*(goal["keypoints"] - center).T, s=28, c=colours, edgecolors="k", linewidths=0.4, depthshade=False)
        ax.set_title(f"goal {np.degrees(goal['angle']):.0f} deg: IoU {goal['iou']:.3f}\n(blue: prediction, green: truth)",
                     fontsize=9)
        axes.append(ax)
    for ax in axes:
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_zlim(-span, span)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=25, azim=-60)
        ax.tick_params(labelsize=6)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


def plot_demo_goals(path, results: dict) -> Path:
    """kp-demo's goal IoU against the angle, one line per scene (``results``: name -> {"goals": [...]})."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for name, res in results.items():
        ax.plot([g["angle_deg"] for g in res["goals"]], [g["iou"] for g in res["goals"]], "o-", label=name)
    ax.set_xlabel("rotation about the vertical axis (deg)")
    ax.set_ylabel("goal IoU vs. ground truth")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
