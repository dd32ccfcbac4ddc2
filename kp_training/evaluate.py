"""``kp-eval``: the paper's evaluation of KP-Net and the CNN-Net baseline from their checkpoints.

Writes into ``--out``: ``results.json`` (everything), ``table1.md``, CSV files of every curve and PNG
figures, and optionally a Markdown report (``--results-md``, e.g. docs/RESULTS.md) with the tables beside the
paper's numbers, the figures, the exact command and the checkpoints' training configs.

1.-4. Table I (representation power), the Fig. 6 interpolation curves, equivariance errors and the rotate-goal
   on simulated sensor clouds: :mod:`kp_training.protocols` says how each is measured.
5. Figures (Fig. 5 reconstructions, Fig. 6 curves, Fig. 7 strip, circle, equivariance, sensor goal curves).

Example::

    kp-eval --kp runs/kpnet --cnn runs/cnn --out docs/results --results-md docs/RESULTS.md

This module is the driver and the command line; the protocols are in :mod:`kp_training.protocols`, the
rendering (tables, CSV, figures, report) in :mod:`kp_training.report`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from kp_core.checkpoint import CheckpointError, checkpoint_paths, load_model
from kp_core.devices import resolve_device
from kp_core.pipeline import Pipeline
from kp_core.placement import trained_inputs

from . import __version__, recipes
from .cli import add_config_flags, given, setting
from .data import SCALE_RANGE
from .protocols import (
    CNN,
    KP,
    KP_COMPARE,
    SENSOR_KINDS,
    equivariance,
    ground_truth_views,
    interpolation_suite,
    representation_power,
    sensor_suite,
)
from .camera import CONDITIONS
from .camera_protocol import camera_protocol
from .report import format_stats, json_safe, make_figures, results_markdown, write_tables_and_csv
from .shapes import MESH_UNITS, UP_AXES, load_shape, trained_shape


@dataclass
class EvalConfig:
    """All settings of one evaluation (stored in ``results.json``)."""

    kp: str | None = setting(None, "KP-Net checkpoint (.safetensors, .json, or a run folder -> best)", metavar="RUN_OR_CKPT")
    cnn: str | None = setting(None, "CNN-Net checkpoint (.safetensors, .json, or a run folder -> best)", metavar="RUN_OR_CKPT")
    kp_compare: str | None = setting(None, "a second KP-Net (e.g. the previous shipped model) scored beside --kp on "
                                     "sensor-like clouds", metavar="RUN_OR_CKPT")
    out: str = setting("outputs/eval", "output folder for tables, JSON, CSV and PNG files")
    results_md: str | None = setting(None, "also write a Markdown report (e.g. docs/RESULTS.md)", metavar="FILE")
    samples: int = setting(500, "augmentations for Table I (paper: 500)")
    angles: int = setting(200, "interpolation angles over [0, 90) deg (paper: 200)")
    poses: int = setting(32, "random base poses for the averaged curves (0: skip)")
    pose_angles: int = setting(46, "angles per random pose")
    circle_angles: int = setting(72, "angles over [0, 360) deg for the KP-Net circle")
    equivariance_samples: int = setting(200, "random transforms per equivariance mode")
    sensor_poses: int = setting(24, "poses per kind (whole, single view) for the sensor-like rotate-goal protocol (0: skip)")
    sensor_psi_step: float = setting(15.0, "goal angle step in degrees over [0, 360)")
    camera_views: int = setting(0, "views per condition of the camera protocol (kp_training.camera_protocol: the "
                                "node's pipeline on simulated depth-camera scenes; the shape must be in metres; 0: skip)")
    figure_examples: int = setting(3, "rows of the Fig. 5 figure")
    strip_angles: int = setting(5, "columns of the Fig. 7 strip")
    chamfer_points: int = setting(1000, "points per cloud for the paper's Chamfer")
    seed: int = setting(0, "seed of every random draw of the evaluation")
    batch: int = setting(16, "grids per forward pass")
    device: str = setting("auto", "auto (cuda if available), cpu, cuda, cuda:1, ...")
    shape: str | None = setting(None, "'mug' or a mesh file (default: the checkpoints' training shape)")
    up_axis: str | None = setting(None, "up axis of --shape", choices=UP_AXES)
    mesh_units: str | None = setting(None, "the unit --shape is written in (default: the checkpoints' training "
                                     "config's)", choices=sorted(MESH_UNITS))
    scale_min: float = setting(SCALE_RANGE[0], "smallest per-axis scale of the augmentations")
    scale_max: float = setting(SCALE_RANGE[1], "largest per-axis scale of the augmentations")
    figures: bool = setting(True, "write PNG figures")
    note: str | None = setting(None, "a note printed at the top of the Markdown report")
    recipe_run: list[str] = setting(help="a kp-train --recipe run folder (or its published copy, "
                                    "scripts/publish_recipe.py) whose stages and time-to-quality curve the report "
                                    "shows; give it once per run", metavar="DIR", default_factory=list)
    num_threads: int | None = setting(None, "CPU threads for torch")
    command: list[str] = setting(help="the command line, for the report", cli=False, default_factory=list)

    def validate(self) -> None:
        if self.kp is None and self.cnn is None:
            raise ValueError("give at least one checkpoint: --kp (KP-Net) and/or --cnn (CNN-Net)")
        positive = {"samples": self.samples, "angles": self.angles, "batch": self.batch,
                    "circle_angles": self.circle_angles, "equivariance_samples": self.equivariance_samples,
                    "chamfer_points": self.chamfer_points, "strip_angles": self.strip_angles}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if not 0 < self.sensor_psi_step <= 360:
            raise ValueError(f"--sensor-psi-step must be in (0, 360] degrees, got {self.sensor_psi_step}")
        for name, value in {"poses": self.poses, "figure_examples": self.figure_examples, "sensor_poses": self.sensor_poses,
                            "camera_views": self.camera_views}.items():
            if value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if self.poses and self.pose_angles < 1:
            raise ValueError(f"--pose-angles must be >= 1, got {self.pose_angles}")
        if not 0 < self.scale_min <= self.scale_max <= 1:
            raise ValueError(f"need 0 < --scale-min <= --scale-max <= 1, got {self.scale_min}, {self.scale_max}")
        if self.up_axis is not None and self.up_axis not in UP_AXES:
            raise ValueError(f"--up-axis must be one of {UP_AXES}")
        for run in self.recipe_run:
            recipes.read(Path(run))  # a recipe's folder with its recipe.json (OSError or ValueError)


def _checkpoint_info(path: str, meta: dict) -> dict:
    weights, _ = checkpoint_paths(path)
    keys = ("architecture", "train_config", "progress", "metrics", "normalization", "code_version", "precision",
            "device", "weights_sha256", "shape", "placement", "inputs", "recipe")
    return {"path": str(weights), **{k: meta[k] for k in keys if k in meta}}


CAMERA_GOAL_PNG = "camera_goal.png"
"""The picture of the camera protocol's first view: the cloud the grid used, its keypoints, the goals over the truth."""


def paper_protocols_skipped(meta: dict) -> str | None:
    """Why the paper's protocols (Table I, Fig. 6, the circle, equivariance: solid grids at zoom 1, the grid on the
    shape's own frame) do not apply to a checkpoint, or None when they do: they score a model only on the inputs
    and grid placement it was trained with."""
    inputs = trained_inputs(meta) or "solid"  # kp-train's default, for checkpoints that do not record it
    zoom = float((meta.get("placement") or {}).get("zoom", 1.0))
    if inputs != "solid":
        return (f"trained on {inputs} clouds placed by the node's rule (zoom {zoom:g}), not on the paper's solid grids: "
                "the paper's protocols do not apply to it; its rotate-goal is scored on sensor and camera clouds")
    if zoom != 1.0:
        return f"trained on solid grids at zoom {zoom:g}, not the paper's 1: the paper's protocols do not apply to it"
    return None


# ----------------------------------------------------------------------------------- driver


def load_checkpoints(cfg: EvalConfig, device: torch.device) -> dict[str, tuple]:
    """name -> (model, metadata); checks that --kp is a keypoint net and --cnn a CNN-Net."""
    loaded = {}
    for name, path, kind, flag in ((KP, cfg.kp, "keypoint", "--kp"), (CNN, cfg.cnn, "cnn", "--cnn"),
                                   (KP_COMPARE, cfg.kp_compare, "keypoint", "--kp-compare")):
        if path is None:
            continue
        if not Path(path).exists() and not checkpoint_paths(path)[1].exists():
            raise CheckpointError(f"{flag} {path}: no such checkpoint file or run directory")
        model, meta = load_model(path, device)
        if model.kind != kind:
            raise ValueError(f"{flag} {path} is a {model.kind!r} model, expected a {kind!r} model "
                             f"({'KP-Net' if kind == 'keypoint' else 'CNN-Net'})")
        loaded[name] = (model, meta)
    return loaded


def choose_shape(cfg: EvalConfig, loaded: dict):
    """The shape to evaluate on: --shape, else the one the checkpoints were trained on (they must agree)."""
    trained = {}
    for name, (_, meta) in loaded.items():
        trained[name] = trained_shape(meta.get("train_config", {}))
    if cfg.shape is not None:
        source, up, units = cfg.shape, cfg.up_axis or "z", cfg.mesh_units
    else:
        if len(set(trained.values())) > 1:
            raise ValueError(f"the checkpoints were trained on different shapes {trained}; pass --shape")
        source, up, units = next(iter(trained.values()))
        up, units = cfg.up_axis or up, cfg.mesh_units or units
    if source != "mug" and not Path(source).is_file():
        raise ValueError(f"shape {source!r} (from the checkpoint's training config) not found: pass --shape")
    return load_shape(source, up_axis=up, mesh_units=units)


def evaluate(cfg: EvalConfig, loaded: dict | None = None) -> dict:
    """Run the whole evaluation and write every output into ``cfg.out``; returns the results dict.

    ``loaded``: :func:`load_checkpoints`'s result when the caller has loaded them already (kp-eval does, so
    that a bad checkpoint is a usage error before any work)."""
    cfg.validate()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    start_time = time.perf_counter()
    loaded = dict(loaded) if loaded is not None else load_checkpoints(cfg, device)
    shape = choose_shape(cfg, loaded)
    points = shape.points.to(device)
    compared = loaded.pop(KP_COMPARE, None)
    # The paper's protocols take the compared KP-Net too when it was trained on their inputs.
    paper_candidates = {**loaded, **({KP_COMPARE: compared} if compared is not None else {})}
    skipped = {name: why for name, (_, meta) in paper_candidates.items() if (why := paper_protocols_skipped(meta))}
    models = {name: model for name, (model, _) in paper_candidates.items() if name not in skipped}
    kp_model, cnn_model = models.get(KP), models.get(CNN)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    results: dict = {
        "kp_eval_version": __version__,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": asdict(cfg),
        "environment": {"device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
                        "torch": torch.__version__, "python": platform.python_version()},
        "shape": {"name": shape.name, **shape.normalization},
        "checkpoints": {name: _checkpoint_info(cfg.kp if name == KP else cfg.cnn, meta) for name, (_, meta) in loaded.items()},
    }
    if compared is not None:
        results["checkpoints"][KP_COMPARE] = _checkpoint_info(cfg.kp_compare, compared[1])
    for name, (_, meta) in loaded.items():
        norm = meta.get("normalization")
        if norm and norm.get("source") != shape.normalization.get("source"):
            print(f"warning: {name} was trained on {norm.get('source')}, evaluating on {shape.normalization.get('source')}",
                  file=sys.stderr)
    figure_data: dict = {}
    if skipped:
        results["paper_protocols_skipped"] = skipped
        for name, why in skipped.items():
            print(f"kp-eval: {name}: {why}", flush=True)

    if models:
        print(f"kp-eval: Table I on {cfg.samples} augmentations ({', '.join(models)}) on {device}", flush=True)
        rep = representation_power(models, points, cfg, device)
        figure_data["examples"] = rep.pop("examples")
        results["representation"] = rep

        print(f"kp-eval: interpolation ({cfg.angles} angles, {cfg.poses} random poses)", flush=True)
        interp = interpolation_suite(kp_model, cnn_model, points, cfg, models.get(KP_COMPARE))
        strip = interp.pop("strip")
        if cfg.figures:
            strip["ground_truth"] = ground_truth_views(
                points, math.pi, torch.ones(3), torch.deg2rad(torch.tensor([interp["psi_deg"][i] for i in strip["index"]])))
        figure_data["strip"] = strip
        results["interpolation"] = interp

    for name, key in ((KP, "equivariance"), (KP_COMPARE, "equivariance_compared")):
        if models.get(name) is not None:  # the same seeded transforms for both
            print(f"kp-eval: equivariance of {name} ({cfg.equivariance_samples} transforms per mode)", flush=True)
            results[key] = equivariance(models[name], points, cfg)

    if cfg.sensor_poses and (KP in loaded or compared is not None):
        print(f"kp-eval: rotate-goal on sensor-like clouds ({cfg.sensor_poses} poses x whole/single)", flush=True)
        kp_models = {KP: loaded[KP]} if KP in loaded else {}
        if compared is not None:
            kp_models[KP_COMPARE] = compared
        results["sensor"] = sensor_suite(kp_models, shape, cfg, device)

    if cfg.camera_views and shape.normalization.get("units") != "m":
        print("kp-eval: camera protocol skipped: the shape has no metric size (its mesh units are unknown)", flush=True)
    elif cfg.camera_views and (KP in loaded or compared is not None):
        print(f"kp-eval: camera protocol ({cfg.camera_views} views x {len(CONDITIONS)} conditions, the node's pipeline)",
              flush=True)
        paths = {KP: cfg.kp, KP_COMPARE: cfg.kp_compare}
        snapshot = out / CAMERA_GOAL_PNG if cfg.figures else None
        results["camera"] = {
            "views": cfg.camera_views, "psi_deg": [0.0, 90.0],
            "models": {name: camera_protocol(Pipeline(checkpoint_paths(paths[name])[0], device=str(device)), shape,
                                             cfg.camera_views, seed=cfg.seed,
                                             snapshot=snapshot if name == KP else None)["summary"]
                       for name in (KP, KP_COMPARE) if paths[name] is not None},
        }

    if cfg.recipe_run:
        results["recipe_runs"] = [
            recipes.time_to_quality(Path(run), figure=out / f"time_to_quality_{i + 1}.png" if cfg.figures else None)
            for i, run in enumerate(cfg.recipe_run)]
    write_tables_and_csv(out, results)
    if cfg.figures:
        print("kp-eval: figures", flush=True)
        results["figures"] = make_figures(out, results, figure_data)
        if (out / CAMERA_GOAL_PNG).is_file() and "camera" in results:
            results["figures"]["camera_goal"] = CAMERA_GOAL_PNG
    results["elapsed_s"] = time.perf_counter() - start_time
    (out / "results.json").write_text(json.dumps(json_safe(results), indent=1, allow_nan=False) + "\n")
    if cfg.results_md:
        md_path = Path(cfg.results_md)
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(results_markdown(results, out, md_path))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kp-eval",
        description="Evaluate KP-Net and/or CNN-Net checkpoints: Table I, the Fig. 6 interpolation, equivariance "
                    "errors and figures (PNG) into --out; optionally a Markdown report (--results-md).")
    add_config_flags(parser, EvalConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    cfg = EvalConfig(**given(args, EvalConfig), command=argv)
    try:  # what the user gave: refused as a usage error (exit 2) before any work
        cfg.validate()
        loaded = load_checkpoints(cfg, resolve_device(cfg.device))
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    except (ValueError, CheckpointError, OSError) as err:
        parser.error(str(err))
    try:  # a failure from here on is not a usage error: it raises, with its traceback (exit 1)
        results = evaluate(cfg, loaded)
    except KeyboardInterrupt:
        print("\nkp-eval: interrupted", file=sys.stderr)
        return 130
    out = Path(cfg.out)
    rep = results.get("representation", {}).get("summary", {})
    for method in (CNN, KP):
        if method in rep:
            s = rep[method]
            print(f"{method}: BCE {format_stats(s['bce'])}  IoU {format_stats(s['iou'])}  Chamfer {format_stats(s['chamfer'])}  "
                  f"NN distance {format_stats(s['distance'])} voxels")
    for name, res in results.get("sensor", {}).get("models", {}).items():
        for kind in SENSOR_KINDS:
            r = res[kind]
            print(f"{name}, {kind} sensor clouds: goal IoU mean {r['mean']:.3f}, min {r['min']:.3f}, spread {r['spread']:.3f} over psi")
    for name, summary in results.get("camera", {}).get("models", {}).items():
        for condition, row in summary.items():
            print(f"{name}, camera: {condition}: goal IoU {row['goal_iou_mean'] or 0:.3f}, yaw within 10 deg "
                  f"{100 * (row['within_10_deg'] or 0):.0f} %")
    print(f"kp-eval: wrote {out / 'results.json'}" + (f" and {cfg.results_md}" if cfg.results_md else "")
          + f" in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
