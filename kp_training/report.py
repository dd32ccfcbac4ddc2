"""Rendering of ``kp-eval``'s results: Markdown tables beside the paper's numbers, CSV files of every curve,
PNG figures (:mod:`kp_training.figures`) and the report (docs/RESULTS.md)."""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
from pathlib import Path

import numpy as np

from . import figures
from .camera_protocol import conditions_markdown
from .protocols import CNN, KP, KP_COMPARE, KP_INTERP, METHOD_FORMULAS, METRICS, PAPER_TABLE_I, SENSOR_KINDS


def camera_markdown(camera: dict) -> str:
    """The camera protocol's conditions table, one per model."""
    parts = []
    for name, summary in camera["models"].items():
        parts += [f"**{name}**", "", conditions_markdown(summary)]
    return "\n".join(parts)


def sensor_markdown(sensor: dict) -> str:
    lines = ["| model | clouds | mean goal IoU | min over psi | spread over psi | IoU at psi 0 / 90 / 180 / 270 | about the true axis: mean / min | reconstruction IoU | axis error [mm] |",
             "|---|---|---|---|---|---|---|---|---|"]
    psi = np.asarray(sensor["psi_deg"])
    at = [int(np.abs(psi - w).argmin()) for w in (0, 90, 180, 270)]
    for name, res in sensor["models"].items():
        for kind in SENSOR_KINDS:
            r = res[kind]
            lines.append(f"| {name} | {kind} | {r['mean']:.3f} | {r['min']:.3f} | {r['spread']:.3f} | "
                         + " / ".join(f"{r['iou_per_psi'][i]:.3f}" for i in at)
                         + f" | {r['mean_true_axis']:.3f} / {r['min_true_axis']:.3f} | {r['recon_iou']:.3f} | {r['axis_error_mm']:.1f} |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])


def format_stats(stats: dict | None, digits: int = 3) -> str:
    if not stats or stats.get("mean") is None or not math.isfinite(stats["mean"]):
        return f"n/a [{stats['n_undefined']} undefined]" if stats and stats.get("n_undefined") else "n/a"
    text = f"{stats['mean']:.{digits}f} ({stats['std']:.{digits}f})"
    if stats.get("n_undefined"):
        text += f" [{stats['n_undefined']} undefined]"
    return text


def table1_markdown(summary: dict, include_paper: bool = True) -> str:
    """Table I as Markdown: ours (mean (std)) and the paper's numbers, plus the Chamfer sampling floor."""
    lines = [
        "| Method | BCE ↓ | IoU ↑ | Chamfer (paper conv.) ↓ | Mean NN distance [voxels] ↓ |",
        "|---|---|---|---|---|",
    ]
    for method in (CNN, KP, KP_COMPARE):
        if method in summary:
            s = summary[method]
            name = method if method == KP_COMPARE else f"{method} (ours)"
            lines.append(f"| {name} | {format_stats(s['bce'])} | {format_stats(s['iou'])} | {format_stats(s['chamfer'])} "
                         f"| {format_stats(s['distance'])} |")
        if include_paper and method in summary and method in PAPER_TABLE_I:
            p = PAPER_TABLE_I[method]
            lines.append(f"| {method} (paper) | {p['bce'][0]} ({p['bce'][1]}) | {p['iou'][0]} ({p['iou'][1]}) "
                         f"| {p['chamfer'][0]} ({p['chamfer'][1]}) | not reported |")
    floor = summary.get("Ground truth (sampling floor)")
    if floor:
        lines.append(f"| Ground truth vs itself (Chamfer sampling floor) | 0 | 1 | {format_stats(floor['chamfer'])} | 0 |")
    return "\n".join(lines) + "\n"


def _at_angles(psi_deg: list[float], wanted=(0, 15, 30, 45, 60, 75, 89)) -> list[int]:
    psi = np.asarray(psi_deg)
    return sorted({int(np.abs(psi - w).argmin()) for w in wanted})


def interpolation_markdown(interp: dict) -> str:
    psi = interp["psi_deg"]
    idx = _at_angles(psi)
    methods = list(interp["curves"])
    lines = ["| psi [deg] | " + " | ".join(f"{m} IoU" for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for i in idx:
        lines.append(f"| {psi[i]:.1f} | " + " | ".join(f"{interp['curves'][m]['iou'][i]:.3f}" for m in methods) + " |")
    mean_row = " | ".join(f"**{np.nanmean(interp['curves'][m]['iou']):.3f}**" for m in methods)
    lines.append(f"| mean over [0, 90) | {mean_row} |")
    if "pose_average" in interp:
        avg = interp["pose_average"]
        row = " | ".join(f"{np.nanmean(avg['mean'][m]['iou']):.3f}" for m in methods)
        lines.append(f"| mean over [0, 90), {len(avg['poses']['angle_deg'])} random poses | {row} |")
    return "\n".join(lines) + "\n"


def claim_markdown(claim: dict) -> str:
    """The paper's reading of Fig. 6 checked in words (:func:`kp_training.protocols.paper_claim`)."""
    base = claim["base"]
    text = (f"**The paper's claim** (KP-Net rotates the object in latent space, CNN-Net's interpolation does not): at "
            f"psi = {claim['psi_deg']:.0f} deg of the base pose KP-Net's IoU is {base['kp']:.3f} and CNN-Net's "
            f"{base['cnn']:.3f} (KP-Net {base['margin']:+.3f}).")
    poses = claim.get("poses")
    if poses:
        verdict = ("larger than both standard deviations: the claim holds here" if poses["holds"] else
                   "not larger than both standard deviations: the claim is not shown here")
        text += (f" Over {poses['count']} random poses at psi = {poses['psi_deg']:.0f} deg: KP-Net {poses['kp']:.3f} "
                 f"(std {poses['kp_std']:.3f}), CNN-Net {poses['cnn']:.3f} (std {poses['cnn_std']:.3f}), a margin of "
                 f"{poses['margin']:+.3f}, {verdict}.")
    if "compared" in base:
        text += f" {KP_COMPARE} at psi = {claim['psi_deg']:.0f} deg: {base['compared']:.3f} at the base pose"
        text += (f", {poses['compared']:.3f} (std {poses['compared_std']:.3f}) over the random poses." if poses else ".")
    return text


def _modes(eq: dict) -> dict:
    return {k: v for k, v in eq.items() if isinstance(v, dict)}


def equivariance_markdown(eq: dict) -> str:
    lines = ["| Transforms | mean [voxels] | median | 90th percentile | mean / keypoint spread | worst keypoint (mean) "
             "| best keypoint (mean) |", "|---|---|---|---|---|---|---|"]
    for mode, r in _modes(eq).items():
        o, pk = r["overall"], r["per_keypoint_mean"]
        lines.append(f"| {mode} | {o['mean']:.2f} | {o['median']:.2f} | {o['p90']:.2f} | {r['relative_to_spread']:.3f} | "
                     f"{max(pk):.2f} (#{int(np.argmax(pk))}) | {min(pk):.2f} (#{int(np.argmin(pk))}) |")
    lines.append(f"\nKeypoint spread (RMS distance of the canonical keypoints from their centroid): "
                 f"{eq['keypoint_spread_voxels']:.2f} voxels.")
    return "\n".join(lines) + "\n"


def write_tables_and_csv(out: Path, results: dict) -> None:
    rep = results.get("representation")
    if rep:
        (out / "table1.md").write_text(table1_markdown(rep["summary"]))
        methods = [m for m in (KP, CNN) if m in rep["per_example"]]
        header = ["index", "angle_rad", "scale_x", "scale_y", "scale_z", "gt_chamfer_floor"]
        header += [f"{m}_{metric}" for m in methods for metric in METRICS]
        rows = []
        tr = rep["transforms"]
        for i in range(len(tr["angle"])):
            row = [i, tr["angle"][i], *tr["scale"][i], rep["per_example"]["Ground truth (sampling floor)"]["chamfer"][i]]
            row += [rep["per_example"][m][metric][i] for m in methods for metric in METRICS]
            rows.append(row)
        _write_csv(out / "representation_per_example.csv", header, rows)
    interp = results.get("interpolation")
    if interp:
        methods = list(interp["curves"])
        header = ["psi_deg"] + [f"{m}_{metric}" for m in methods for metric in METRICS]
        rows = [[interp["psi_deg"][i]] + [interp["curves"][m][metric][i] for m in methods for metric in METRICS]
                for i in range(len(interp["psi_deg"]))]
        _write_csv(out / "interpolation.csv", header, rows)
        (out / "interpolation.md").write_text(interpolation_markdown(interp))
        if "pose_average" in interp:
            avg = interp["pose_average"]
            header = ["psi_deg"] + [f"{m}_{metric}_{stat}" for m in methods for metric in METRICS for stat in ("mean", "std")]
            rows = [[avg["psi_deg"][i]] + [avg[stat][m][metric][i] for m in methods for metric in METRICS for stat in ("mean", "std")]
                    for i in range(len(avg["psi_deg"]))]
            _write_csv(out / "interpolation_pose_average.csv", header, rows)
        if "circle" in interp:
            c = interp["circle"]
            header = ["psi_deg", "kp_iou"] + (["kp_iou_pose_mean", "kp_iou_pose_std"] if "pose_mean_iou" in c else [])
            rows = [[c["psi_deg"][i], c["iou"][i]] + ([c["pose_mean_iou"][i], c["pose_std_iou"][i]] if "pose_mean_iou" in c else [])
                    for i in range(len(c["psi_deg"]))]
            _write_csv(out / "circle.csv", header, rows)
    camera = results.get("camera")
    if camera:
        (out / "camera_conditions.md").write_text(camera_markdown(camera))
    sensor = results.get("sensor")
    if sensor:
        (out / "sensor_goal.md").write_text(sensor_markdown(sensor))
        names = list(sensor["models"])
        header = ["psi_deg"] + [f"{n}_{kind}_iou" for n in names for kind in SENSOR_KINDS]
        rows = [[p] + [sensor["models"][n][kind]["iou_per_psi"][i] for n in names for kind in SENSOR_KINDS]
                for i, p in enumerate(sensor["psi_deg"])]
        _write_csv(out / "sensor_goal.csv", header, rows)
    eq = results.get("equivariance")
    if eq:
        (out / "equivariance.md").write_text(equivariance_markdown(eq))
        modes = _modes(eq)
        k = len(next(iter(modes.values()))["per_keypoint_mean"])
        _write_csv(out / "equivariance_per_keypoint.csv", ["keypoint"] + [f"{m}_mean_voxels" for m in modes],
                   [[i] + [modes[m]["per_keypoint_mean"][i] for m in modes] for i in range(k)])


def make_figures(out: Path, results: dict, figure_data: dict) -> dict[str, str]:
    """Write the PNG figures; returns figure name -> file name (relative to ``out``)."""

    written: dict[str, str] = {}
    rep = figure_data.get("examples")
    if rep and rep["ground_truth"]:
        labels = []
        tr = results["representation"]["transforms"]
        for i in range(len(rep["ground_truth"])):
            s = tr["scale"][i]
            labels.append(f"{math.degrees(tr['angle'][i]):.0f} deg, s=({s[0]:.2f},{s[1]:.2f},{s[2]:.2f})")
        figures.reconstruction_figure(
            out / "fig5_reconstructions.png", rep["ground_truth"], rep["keypoints"] or None,
            rep[KP] or None, rep[CNN] or None, labels)
        written["reconstructions"] = "fig5_reconstructions.png"
    interp = results.get("interpolation")
    if interp:
        psi = np.asarray(interp["psi_deg"])
        figures.plot_interpolation(out / "fig6_interpolation.png", psi, interp["curves"],
                                   title="Latent interpolation, base pose (180 deg, unscaled)")
        written["interpolation"] = "fig6_interpolation.png"
        if "pose_average" in interp:
            avg = interp["pose_average"]
            figures.plot_interpolation(out / "fig6_interpolation_pose_average.png", np.asarray(avg["psi_deg"]),
                                       avg["mean"], spread=avg["std"],
                                       title=f"Latent interpolation, mean (band: std) over {len(avg['poses']['angle_deg'])} random poses and scales")
            written["interpolation_pose_average"] = "fig6_interpolation_pose_average.png"
        if "circle" in interp:
            c = interp["circle"]
            figures.plot_circle(out / "circle_iou.png", np.asarray(c["psi_deg"]), np.asarray(c["iou"]),
                                np.asarray(c["pose_mean_iou"]) if "pose_mean_iou" in c else None,
                                np.asarray(c["pose_std_iou"]) if "pose_std_iou" in c else None)
            written["circle"] = "circle_iou.png"
        strip = figure_data.get("strip")
        if strip and strip["grids"]:
            index = strip["index"]
            rows = {"Ground truth": list(strip["ground_truth"])}
            for method in (KP, KP_INTERP, KP_COMPARE, CNN):
                if method in strip["grids"]:
                    rows[method] = [strip["grids"][method].get(i) for i in index]
            angles = [interp["psi_deg"][i] for i in index]
            figures.interpolation_strip(out / "fig7_interpolation_strip.png", angles, rows)
            written["strip"] = "fig7_interpolation_strip.png"
    sensor = results.get("sensor")
    if sensor:
        figures.plot_sensor_goal(out / "sensor_goal_iou.png", np.asarray(sensor["psi_deg"]),
                                 {name: {kind: np.asarray(r[kind]["iou_per_psi"]) for kind in SENSOR_KINDS}
                                  for name, r in sensor["models"].items()})
        written["sensor"] = "sensor_goal_iou.png"
    eq = results.get("equivariance")
    if eq:
        figures.plot_equivariance(out / "equivariance.png", {m: np.asarray(r["per_keypoint_mean"]) for m, r in _modes(eq).items()})
        written["equivariance"] = "equivariance.png"
    return written


def json_safe(obj):
    """JSON-safe copy: non-finite floats (e.g. the Chamfer of an empty reconstruction) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def training_length(info: dict) -> tuple[int | None, int | None]:
    """Pairs and epochs a checkpoint was trained on (its ``_checkpoint_info``): for a recipe's model, every stage's
    (each stage's progress counts its own steps), else its run's."""
    stages = (info.get("recipe") or {}).get("stages")
    if stages and info.get("train_config", {}).get("batch_pairs"):
        return sum(s["global_step"] for s in stages) * info["train_config"]["batch_pairs"], sum(s["epochs"] for s in stages)
    progress = info.get("progress", {})
    return progress.get("pairs_seen"), progress.get("epoch")


def recipe_runs_markdown(runs: list[dict], rel: Path) -> list[str]:
    """The section on ``kp-train --recipe`` runs (``kp-eval --recipe-run``): each run's stages, curve and table."""
    lines = ["## Your own object in one command: time to quality", "",
             "Each `kp-train --recipe` run below: its stages (steps; minutes of step time, the training steps alone; "
             "minutes in all, setting up, validation and checkpoints included, across resumes), the yaw calibration's "
             "and the report's minutes, then the validation figures at the end of every epoch against minutes of "
             "step time from the start (reconstruction IoU and the per-epoch goal check on simulated camera clouds; "
             "its report's sensor and camera protocols are in the run's `report.md`). A dash: not recorded by the "
             "revision that ran it.", ""]
    for run in runs:
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(run["given"].items()))
        shape = run["given"].get("shape", "mug")
        lines += [f"### {Path(shape).name}: `kp-train --recipe {run['recipe']}{' ' + flags if flags else ''}`", "",
                  f"Run folder: `{run['run']}`.", ""]
        if run["stages"]:
            lines += ["| stage | epochs | steps | minutes of step time | minutes in all |", "|---|---|---|---|---|"]
            lines += [f"| {st['stage']} | {st['epochs']} | {st['global_step']} | {st['train_seconds'] / 60:.1f} | "
                      f"{_minutes(st.get('run_seconds'))} |" for st in run["stages"]]
            parts = [st.get("run_seconds") for st in run["stages"]]
            line = ""
            if run.get("report"):
                parts += [run.get("calibration_seconds"), run.get("report_seconds")]
                line = (f"Yaw calibration {_minutes(run.get('calibration_seconds'))} min, report "
                        f"{_minutes(run.get('report_seconds'))} min; ")
            total = _minutes(sum(parts) if all(p is not None for p in parts) else None)
            lines += ["", f"{line}the whole run, from its first stage's start to its end: {total} min.", ""]
        else:
            lines += ["(not finished: no model exported yet)", ""]
        if run.get("figure"):
            lines += [f"![Time to quality, {Path(shape).name}]({(rel / run['figure']).as_posix()})", ""]
        lines += [run["table"], ""]
    return lines


def results_markdown(results: dict, out: Path, md_path: Path) -> str:
    """The report (docs/RESULTS.md): tables beside the paper's, figures, commands, checkpoint configs."""
    cfg = results["config"]
    rel = Path(os.path.relpath(out, md_path.parent))
    fig = results.get("figures", {})

    def image(key: str, alt: str) -> str:
        return f"![{alt}]({(rel / fig[key]).as_posix()})\n" if key in fig else ""

    lines = ["# Results", ""]
    lines.append(f"Generated by `kp-eval` {results['kp_eval_version']} on {results['generated']} "
                 f"({results['environment']['device']}, torch {results['environment']['torch']}, "
                 f"{results['elapsed_s']:.0f} s). Regenerate with the command below; every number and figure "
                 f"here comes from it.")
    lines.append("")
    if cfg.get("note"):
        lines += [f"> **Note:** {cfg['note']}", ""]
    for name, info in results["checkpoints"].items():
        if name in results.get("paper_protocols_skipped", {}):
            continue  # nothing here sets it beside the paper
        pairs, epochs = training_length(info)
        if not info.get("progress"):
            lines += [f"> **{name}** has no training progress in its metadata (an untrained or hand-made checkpoint?).", ""]
        elif pairs is not None and pairs < 100_000:
            lines += [f"> **{name}** was trained on only {pairs} pairs ({epochs} epochs; the paper: 400 epochs x "
                      "4000 pairs = 1.6 M pairs): its numbers are not comparable to the paper's.", ""]
    lines += ["## Command", "", "```bash", "kp-eval " + shlex.join(cfg["command"]), "```", ""]
    lines += [f"Seed {cfg['seed']}, device `{results['environment']['device']}`, "
              f"shape `{results['shape']['source']}`. Settings: {cfg['samples']} augmentations for Table I, "
              f"{cfg['angles']} interpolation angles, {cfg['poses']} random poses x {cfg['pose_angles']} angles "
              f"for the averaged curves, {cfg['circle_angles']} angles on the circle, "
              f"{cfg['equivariance_samples']} transforms per equivariance mode.", ""]
    for name, why in results.get("paper_protocols_skipped", {}).items():
        lines += [f"> **{name}**: {why}.", ""]
    rep = results.get("representation")
    if rep:
        lines += ["## Representation power (Table I)", "",
                  f"Reconstruction of {cfg['samples']} seeded random augmentations (rotation about z in [0, 2 pi), "
                  f"per-axis scale in [{cfg['scale_min']}, {cfg['scale_max']})), the same views for both networks; "
                  "mean (standard deviation).", "", table1_markdown(rep["summary"]),
                  "BCE: plain BCE of the sigmoid outputs averaged over voxels. IoU: at 0.5, per example. "
                  "Chamfer (the paper's convention): thresholded grids, occupied voxel centres in the [-1, 1] frame, "
                  f"up to {cfg['chamfer_points']} points sampled from each, sum of squared nearest-neighbour distances "
                  "forward plus backward. It is dominated by its sampling floor (the ground-truth row: two random "
                  "subsets of the *same* grid). Mean NN distance: the mean symmetric nearest-neighbour distance over "
                  "all occupied voxels in voxels (exact; 0 for a perfect reconstruction).", "",
                  ]
        if "reconstructions" in fig:
            columns = ["a) ground truth"] + (["b) keypoints (colour = keypoint index)", "c) KP-Net reconstruction"]
                                             if KP in rep["summary"] else []) + (["d) CNN-Net reconstruction"] if CNN in rep["summary"] else [])
            lines += [image("reconstructions", "Reconstructions (Fig. 5)"),
                      "Fig. 5 style: " + ", ".join(columns) + " (surface voxels, coloured by height).", ""]
    interp = results.get("interpolation")
    if interp:
        lines += ["## Latent interpolation (Fig. 6)", "",
                  "Base X: the unscaled shape rotated by 180 deg about z; goal X*: rotated a further 90 deg. Ground "
                  "truth at each angle psi: the rotated shape voxelized again. a = psi / 90 deg. "
                  + " ".join(METHOD_FORMULAS[m] for m in interp["curves"]), "",
                  interpolation_markdown(interp), image("interpolation", "Interpolation (Fig. 6)"), ""]
        if "pose_average" in interp:
            lines += ["Averaged over random base poses (rotation and anisotropic scale of the training sampler; "
                      "band: one standard deviation):", "", image("interpolation_pose_average", "Pose-averaged interpolation"), ""]
        if "claim" in interp:
            lines += [claim_markdown(interp["claim"]), ""]
        if "strip" in fig:
            lines += [image("strip", "Interpolation strip (Fig. 7)"), "Fig. 7 style: rows ground truth and methods, "
                      "columns rotation angles.", ""]
        if "circle" in interp:
            c = interp["circle"]
            idx = [int(np.abs(np.asarray(c["psi_deg"]) - w).argmin()) for w in (0, 90, 180, 270)]
            lines += ["### KP-Net goal IoU over the whole circle", "",
                      "| psi [deg] | " + " | ".join(f"{c['psi_deg'][i]:.0f}" for i in idx) + " | mean |",
                      "|---|" + "---|" * (len(idx) + 1),
                      "| IoU, base pose | " + " | ".join(f"{c['iou'][i]:.3f}" for i in idx) + f" | {np.mean(c['iou']):.3f} |"]
            if "pose_mean_iou" in c:
                lines.append("| IoU, random poses (mean) | " + " | ".join(f"{c['pose_mean_iou'][i]:.3f}" for i in idx)
                             + f" | {np.mean(c['pose_mean_iou']):.3f} |")
            lines += ["", image("circle", "Goal IoU over the circle"), ""]
    sensor = results.get("sensor")
    if sensor:
        lines += ["## Rotate-goal on sensor-like clouds (what the node answers)", "",
                  f"{len(sensor['pose_angle_deg'])} seeded yaw poses of the shape at its trained size, each seen as a "
                  "simulated depth-sensor cloud (surface samples, z-buffer visibility, depth noise up to 1.5 mm, "
                  "25-100 % density, up to 1 % outliers): *whole* = fused from 4 cameras around it, *single* = one "
                  "camera (azimuth anywhere, elevation 10-70 deg, 0.4-1.5 m). The grid is placed by the node's rule "
                  "(each model's own zoom); the goal `g(R_z(psi)(k - a) + a)` about the decoded object's vertical axis "
                  "`a` is scored against the solid turned by psi about its true vertical axis, voxelized in the same "
                  f"grid, at psi = 0, {sensor['psi_deg'][1]:.0f}, ..., {sensor['psi_deg'][-1]:.0f} deg. Spread = max - min "
                  "over psi of the pose-averaged IoU; axis error = distance between the decoded and the true axis.", "",
                  sensor_markdown(sensor), image("sensor", "Goal IoU on sensor-like clouds"), ""]
    camera = results.get("camera")
    if camera:
        lines += ["## Depth-camera scenes (what a robot's camera delivers)", "",
                  f"The node's own pipeline (`kp_core/pipeline.py`, input conditioning included) on {camera['views']} "
                  "seeded views per condition of the shape at its real size on a table, rendered as 640 x 480 "
                  "organized depth images by `kp_training/camera.py` (one camera 0.6 m away at 30 deg elevation "
                  "unless the condition says otherwise; depth noise grows with the range squared). Goals at psi = "
                  f"{', '.join(f'{p:.0f}' for p in camera['psi_deg'])} deg, scored about the axis the service returns "
                  "(`kp_training/camera_protocol.py`): goal IoU; the yaw error (the turn of the true object about that "
                  "axis that best matches the goal, minus psi); the IoU of the asymmetric part (what lies beyond the "
                  "largest body of revolution inside the shape: the mug's handle, a jug's handle and spout); whether it "
                  "was seen (30 or more of its pixels in the cloud); the share of the points the grid used "
                  "that are the object's; and the goal IoU on the same views given as perfect object clouds.", ""]
        lines += [camera_markdown(camera), ""]
        if "camera_goal" in fig:
            lines += [image("camera_goal", "The first view's answers"), "The first view of the first condition: the "
                      "points the grid used with their keypoints, then each goal (blue) over the true object turned "
                      "about the returned axis (green).", ""]
    eq, eq_compared = results.get("equivariance"), results.get("equivariance_compared")
    if eq or eq_compared:
        lines += ["## Equivariance error", "",
                  "`|f(phi(X)) - phi(f(X))|` per keypoint, in voxels (1 voxel = 2/64 grid units), X the canonical "
                  "(unrotated, unscaled) shape voxelized, phi a random rotation about z (scale 1), a random per-axis "
                  "scale (angle 0), or both; statistics over all transforms x keypoints. Re-voxelization alone "
                  "moves surfaces by up to about half a voxel.", ""]
    if eq:
        lines += [equivariance_markdown(eq), image("equivariance", "Equivariance error per keypoint"), ""]
    if eq_compared:
        lines += [f"### {KP_COMPARE}", "", "The same transforms.", "", equivariance_markdown(eq_compared), ""]
    if results.get("recipe_runs"):
        lines += recipe_runs_markdown(results["recipe_runs"], rel)
    lines += ["## Checkpoints", ""]
    for name, info in results["checkpoints"].items():
        lines += [f"### {name}", "", f"`{info['path']}` (SHA-256 of the weights `{info.get('weights_sha256', '?')}`)", ""]
        for key in ("architecture", "train_config", "progress"):
            if key in info:
                lines += [f"{key}:", "", "```json", json.dumps(info[key], indent=2, sort_keys=True), "```", ""]
        val = info.get("metrics", {}).get("val")
        if val:
            lines += ["validation metrics at the checkpoint: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()), ""]
    lines += ["## Files", "", f"Everything above is in `{rel.as_posix()}/`: `results.json` (all numbers), "
              "`table1.md`, `representation_per_example.csv`, `interpolation.csv`, "
              "`interpolation_pose_average.csv`, `circle.csv`, `equivariance_per_keypoint.csv` and the PNG figures.", ""]
    return "\n".join(lines)


