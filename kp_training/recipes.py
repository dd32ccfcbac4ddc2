"""Recipes: a whole training in one command, ``kp-train --recipe NAME --out DIR`` (stages of :class:`TrainConfig`).

A recipe is a list of stages, each a set of config fields and a length in epochs (so in steps: nothing stops on
the clock, and a run repeats on another machine). Every stage after the first starts from the previous one's best
checkpoint. The run folder holds ``recipe.json`` (the recipe's name and the flags given, which apply to every
stage), one run folder per stage (``stage1-shape``, ...), and at the end ``model.safetensors`` + ``model.json``
(the last stage's best checkpoint, which the node serves from ``model_path:=DIR``; for the node's recipe with its
yaw spread calibrated, :mod:`kp_training.yaw_calibration`) and, for the node's recipe, ``report.md``: kp-eval's
sensor and camera protocols for the shape, with figures. ``kp-train --resume DIR``
continues the stage that was interrupted (Ctrl-C is safe) and goes on with the next ones.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kp_core.checkpoint import COMMITTED_MAX_BYTES, atomic_write_json, checkpoint_paths, read_metadata, update_metadata

RECIPE_FILE = "recipe.json"
MODEL_STEM = "model"


@dataclass(frozen=True)
class Stage:
    """One training run of a recipe: its config fields (on top of the recipe's) and its length in epochs."""

    name: str
    epochs: int
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    fields: dict
    """Config fields of every stage."""
    stages: tuple[Stage, ...]
    report: bool = False
    """Evaluate the model like the node uses it (kp-eval's sensor and camera protocols) into ``report.md``."""


NODE_FIELDS = dict(preset="cylinder", inputs="sensor", zoom=1.3, whole_fraction=0.3, camera_artifacts=0.5,
                   conditioning=True, canonical_yaw=True, alpha=10.0, gamma=1.0, batch_pairs=4, pairs_per_epoch=600,
                   val_pairs=64, goal_check_clouds=8, scale_min=0.825, scale_max=0.925)
"""The node shows the object at one size (its metric size fills the same share of the grid): every stage trains
around it (+-6 % per axis) rather than over the paper's 0.75-1 range. An epoch is 150 steps of 4 pairs, each ended
by a validation."""
PAPER_FIELDS = dict(inputs="solid", batch_pairs=8, pairs_per_epoch=4000, lr=1e-3, alpha=1.0, beta=0.1)
CPU_FIELDS = dict(PAPER_FIELDS, pairs_per_epoch=400, val_pairs=200)
CPU_STAGES = (Stage("constant-rate", 60), Stage("anneal", 15, dict(lr=3e-4, lr_final=1e-5)))
"""The paper's reproduction at a CPU's scale: 3750 steps of 8 pairs (30 000 pairs; the paper: 1.6 M), the paper's
constant rate, then the rate brought down from the best checkpoint (a short run ends nearer its plateau)."""

RECIPES = {
    "node": Recipe(
        "node",
        "a model the node serves: the z-rotation equivariant encoder and yaw-canonical decoder trained on simulated "
        "depth-camera clouds with a real camera's artifacts, conditioned as the node conditions them, at the size "
        "the node shows the object, the rate brought down over the whole run",
        NODE_FIELDS,
        (Stage("shape", 34, dict(lr=1e-3, lr_final=1e-5)),),
        report=True,
    ),
    "paper": Recipe("paper", "the paper's KP-Net: 400 epochs of 4000 pairs on solid grids",
                    dict(PAPER_FIELDS, preset="paper"), (Stage("kpnet", 400),)),
    "cnn": Recipe("cnn", "the paper's CNN-Net baseline (128-d latent, reconstruction loss only), same schedule",
                  dict(PAPER_FIELDS, preset="cnn"), (Stage("cnnnet", 400),)),
    "paper-cpu": Recipe(
        "paper-cpu",
        "the paper's KP-Net at a scale a 2-core CPU trains (its losses, weights and augmentation on solid grids; "
        "the fast encoder and a 256-wide decoder; 400 pairs an epoch): the paper's constant rate, then an anneal",
        dict(CPU_FIELDS, preset="fast"), CPU_STAGES),
    "cnn-cpu": Recipe(
        "cnn-cpu",
        "the paper's CNN-Net baseline at the same scale (128-d latent, reconstruction loss only, an encoder as "
        "narrow as the fast KP-Net's, the same 256-wide decoder), same pairs and schedule",
        dict(CPU_FIELDS, preset="cnn-fast"), CPU_STAGES),
    "cylinder-cpu": Recipe(
        "cylinder-cpu",
        "this project's architecture (the z-rotation equivariant encoder and yaw-canonical decoder, with the "
        "axis-spread hinge it needs) on the paper's solid grids, same pairs and schedule as paper-cpu",
        dict(CPU_FIELDS, preset="cylinder", canonical_yaw=True, gamma=1.0), CPU_STAGES),
}


def stage_dir(out: Path, index: int, stage: Stage) -> Path:
    return out / f"stage{index + 1}-{stage.name}"


def stage_done(folder: Path, epochs: int) -> bool:
    last = folder / "last.json"
    return last.is_file() and read_metadata(last)["progress"]["epoch"] >= epochs


def stage_configs(recipe: Recipe, given: dict, out: Path) -> list[dict]:
    """The config fields of every stage: the recipe's, the stage's, then what the user gave (every stage)."""
    configs = []
    for i, stage in enumerate(recipe.stages):
        values = {**recipe.fields, "epochs": stage.epochs, **stage.fields, **given, "out": str(stage_dir(out, i, stage))}
        if i > 0:
            values["init_from"] = str(stage_dir(out, i - 1, recipe.stages[i - 1]) / "best")
        configs.append(values)
    return configs


def validate(recipe: Recipe, given: dict, out: Path) -> list[dict]:
    """Every stage's config, checked before the first step of the first (ValueError names the field)."""
    from .train import TrainConfig

    configs = stage_configs(recipe, given, out)
    for values in configs:
        TrainConfig(**values).validate()
    return configs


def start(recipe_name: str, given: dict, out: Path) -> None:
    """Write the run folder's ``recipe.json`` (a new run); refuses a folder that holds a run, and a node model
    of a mesh whose units are not given."""
    recipe = RECIPES[recipe_name]
    if recipe.report and given.get("shape", "mug") != "mug" and not given.get("mesh_units"):
        raise ValueError(f"--recipe {recipe_name} needs --mesh-units for a mesh file: the node sizes its grid and "
                         "finds the object in metres")
    if (out / RECIPE_FILE).exists() or (out / "last.json").exists():
        raise FileExistsError(f"{out} already holds a run: pass --resume {out} to continue it or choose another --out")
    validate(recipe, given, out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / RECIPE_FILE, {"recipe": recipe_name, "given": given, "fields": recipe.fields,
                                          "stages": [dataclasses.asdict(s) for s in recipe.stages], "report": recipe.report})


def read(out: Path) -> tuple[Recipe, dict]:
    """The recipe and the flags of the run in ``out``, as the run started it (a later revision of the recipe
    changes neither a run under way nor the report of a finished one)."""
    saved = json.loads((out / RECIPE_FILE).read_text())
    if saved.get("recipe") not in RECIPES:
        raise ValueError(f"{out / RECIPE_FILE}: unknown recipe {saved.get('recipe')!r}")
    recipe = RECIPES[saved["recipe"]]
    meta = out / f"{MODEL_STEM}.json"
    if "stages" in saved:
        stages = tuple(Stage(**s) for s in saved["stages"])
    elif meta.is_file():  # finished before recipe.json listed its stages: the model's JSON does
        stages = tuple(Stage(s["stage"], s["epochs"]) for s in read_metadata(meta)["recipe"]["stages"])
    else:
        stages = recipe.stages
    recipe = dataclasses.replace(recipe, stages=stages, fields=saved.get("fields", recipe.fields),
                                 report=saved.get("report", recipe.report))
    return recipe, dict(saved.get("given") or {})


def run(out: Path, given_now: dict | None = None) -> Path:
    """Run (or continue) the recipe in ``out`` to its end; returns the model's weights path (a stage's ``last``
    when ``max_minutes`` stopped it). ``given_now``: flags given with ``--resume`` (they apply from here on, as
    with a plain run)."""
    from .train import TrainConfig, Trainer

    recipe, given = read(out)
    given.update(given_now or {})
    configs = validate(recipe, given, out)
    stages_wall = []
    for i, (stage, values) in enumerate(zip(recipe.stages, configs)):
        folder = Path(values["out"])
        label = f"stage {i + 1}/{len(recipe.stages)} {stage.name}: "
        if not stage_done(folder, values["epochs"]):
            resume = (folder / "last.json").is_file()
            if resume:
                values = {**json.loads((folder / "config.json").read_text()), **{k: values[k] for k in given}}
            print(f"kp-train --recipe {recipe.name}: {label}{'resuming' if resume else 'starting'} in {folder}", flush=True)
            trainer = Trainer(TrainConfig(**values), resume=resume)
            trainer.fit(label=label, resume_dir=out)
            if not stage_done(folder, values["epochs"]):  # stopped by --max-minutes: --resume goes on from here
                return folder / "last.safetensors"
        progress = read_metadata(folder / "last.json")["progress"]
        stages_wall.append({"stage": stage.name, "epochs": values["epochs"], "global_step": progress["global_step"],
                            "train_seconds": progress["train_seconds"], "run_seconds": progress.get("run_seconds")})
    meta = out / f"{MODEL_STEM}.json"
    weights = checkpoint_paths(out / MODEL_STEM)[0] if meta.is_file() else export(out, recipe, stages_wall)
    curve = time_to_quality(out, figure=out / "time_to_quality.png")
    model_meta = read_metadata(meta)
    if recipe.report and model_meta["architecture"].get("canonical_yaw") and "yaw_calibration" not in model_meta:
        calibrate_yaw(out)
    if recipe.report and not (out / "report.md").exists():
        write_report(out, given)
        with open(out / "report.md", "a") as report:
            report.write(f"\n## Time to quality\n\n![Time to quality]({curve['figure']})\n\n" + curve['table'] + "\n")
    return weights


def stage_logs(out: Path, recipe: Recipe) -> list[tuple[str, list[dict]]]:
    """Each stage's ``log.csv`` rows, their ``wall_s`` (seconds of step time) counted from the recipe's start; a
    stage that has not ended an epoch yet has none."""
    logs, offset = [], 0.0
    for i, stage in enumerate(recipe.stages):
        path = stage_dir(out, i, stage) / "log.csv"
        if not path.is_file():
            logs.append((stage.name, []))
            continue
        with open(path, newline="") as f:
            rows = [dict(r, wall_s=float(r["wall_s"]) + offset) for r in csv.DictReader(f)]
        logs.append((stage.name, rows))
        if rows:
            offset = rows[-1]["wall_s"]
    return logs


def write_curve(recipe: Recipe, logs: list[tuple[str, list[dict]]], path: Path) -> Path:
    """``path`` (a PNG): every stage's validation curves (:func:`stage_logs`) on one time axis."""
    from .figures import plot_training_curve

    starts, start = [], 0.0
    for name, rows in logs:
        starts.append((start / 60, name))
        start = rows[-1]["wall_s"] if rows else start
    plot_training_curve(path, [r for _, rows in logs for r in rows], f"kp-train --recipe {recipe.name}: time to quality",
                        starts)
    return path


def curve_table(logs: list[tuple[str, list[dict]]]) -> str:
    """Markdown: the validation figures at the end of each epoch (:func:`stage_logs`), with minutes of step time
    from the start."""
    columns = [("val_iou", "reconstruction IoU"), ("val_goal_whole_mean", "goal IoU whole"),
               ("val_goal_single_mean", "goal IoU single"), ("val_yaw_whole_p90_deg", "yaw p90 whole [deg]"),
               ("val_yaw_single_p90_deg", "yaw p90 single [deg]")]
    lines = ["| stage | epoch | step | minutes | " + " | ".join(label for _, label in columns) + " |",
             "|---|---|---|---|" + "---|" * len(columns)]
    for name, rows in logs:
        for r in rows:
            cells = ["-" if r.get(k) in (None, "") else f"{float(r[k]):.0f}" if k.endswith("_deg") else f"{float(r[k]):.3f}"
                     for k, _ in columns]
            lines.append(f"| {name} | {r['epoch']} | {r['global_step']} | {r['wall_s'] / 60:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def time_to_quality(out: Path, figure: Path | None = None) -> dict:
    """What a report shows of a recipe's run folder (or of a copy made by :func:`publish`): the recipe, the flags
    given, each stage's steps and step time (once the model is exported), the validation table and, with
    ``figure``, the curve drawn there (:func:`write_curve`; its file name under ``"figure"``)."""
    recipe, given = read(out)
    logs = stage_logs(out, recipe)
    meta = out / f"{MODEL_STEM}.json"
    model_meta = read_metadata(meta) if meta.is_file() else {}
    entry = {"run": str(out), "recipe": recipe.name, "given": given, "report": recipe.report,
             "stages": model_meta.get("recipe", {}).get("stages", []), "table": curve_table(logs),
             "calibration_seconds": (model_meta.get("yaw_calibration") or {}).get("seconds"),
             "report_seconds": model_meta.get("recipe", {}).get("report_seconds")}
    if figure is not None:
        entry["figure"] = write_curve(recipe, logs, figure).name
    return entry


PUBLISHED = (RECIPE_FILE, f"{MODEL_STEM}.json", "report.md", "time_to_quality.png", "eval/*.png", "eval/*.md",
             "stage*/log.csv", "stage*/config.json")
"""What :func:`publish` copies: everything a report of the run reads, no weights."""


def publish(out: Path, dest: Path, weights: bool = False) -> list[Path]:
    """Copy a recipe run's report, curves, logs and metadata (:data:`PUBLISHED`) into ``dest`` (e.g.
    ``docs/recipes/NAME``), keeping the run folder's layout so that ``kp-eval --recipe-run dest`` reads it; with
    ``weights`` its model's weights too (a finished run's, at most :data:`COMMITTED_MAX_BYTES`), so that ``dest``
    is a model that kp-eval and the node load where the run folder is gone."""
    read(out)  # a recipe's folder, or ValueError
    patterns = PUBLISHED
    if weights:
        model_weights, _ = checkpoint_paths(out / MODEL_STEM)
        if not model_weights.is_file():
            raise ValueError(f"{out} has no {model_weights.name} yet: the recipe has not finished")
        if model_weights.stat().st_size > COMMITTED_MAX_BYTES:
            raise ValueError(f"{model_weights} is {model_weights.stat().st_size / 2**20:.1f} MB, over the "
                             f"{COMMITTED_MAX_BYTES / 2**20:.0f} MB a repository holds: publish it without its weights")
        patterns = (model_weights.name,) + PUBLISHED
    copied = []
    for pattern in patterns:
        for source in sorted(out.glob(pattern)):
            target = dest / source.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copied.append(target)
    return copied


def export(out: Path, recipe: Recipe, stages_wall: list[dict]) -> Path:
    """``DIR/model.*``: the last stage's best checkpoint, with the recipe and each stage's steps and time."""
    source_weights, source_meta = checkpoint_paths(stage_dir(out, len(recipe.stages) - 1, recipe.stages[-1]) / "best")
    weights, meta_path = checkpoint_paths(out / MODEL_STEM)
    meta = json.loads(source_meta.read_text())
    meta["recipe"] = {"name": recipe.name, "stages": stages_wall}
    shutil.copyfile(source_weights, weights)
    atomic_write_json(meta_path, meta)
    return weights


def calibrate_yaw(out: Path) -> None:
    """The yaw spread the node answers with (:mod:`kp_training.yaw_calibration`), into ``DIR/model.json``."""
    from . import yaw_calibration

    started = time.perf_counter()
    print(f"kp-train: calibrating the yaw spread of {out / MODEL_STEM}", flush=True)
    calibration = yaw_calibration.calibrate(out / MODEL_STEM)
    calibration["command"] = "kp-train --recipe (kp_training.yaw_calibration.calibrate's defaults)"
    calibration["seconds"] = round(time.perf_counter() - started, 1)
    yaw_calibration.write(out / MODEL_STEM, calibration)
    print("\n".join(yaw_calibration.describe(calibration)), flush=True)
    print(f"kp-train: yaw spread calibrated in {calibration['seconds']:.0f} s", file=sys.stderr, flush=True)


def write_report(out: Path, given: dict) -> None:
    """``DIR/report.md`` (and ``DIR/eval/``): kp-eval's protocols on the recipe's model, at a scale that takes a
    few minutes."""
    from .cli import given as flags_given
    from .evaluate import build_parser, evaluate
    from .evaluate import EvalConfig

    command = ["--kp", str(out / MODEL_STEM), "--samples", "32", "--angles", "9", "--poses", "0", "--circle-angles", "8",
               "--equivariance-samples", "4", "--sensor-poses", "12", "--camera-views", "4", "--device",
               given.get("device", "auto"), "--out", str(out / "eval"), "--results-md", str(out / "report.md")]
    if given.get("num_threads"):
        command += ["--num-threads", str(given["num_threads"])]
    config = EvalConfig(**flags_given(build_parser().parse_args(command), EvalConfig), command=command,
                        note=f"The model of `kp-train --recipe` in {out}.")
    started = time.perf_counter()
    print(f"kp-train: evaluating {out / MODEL_STEM} -> {out / 'report.md'}", flush=True)
    evaluate(config)
    seconds = round(time.perf_counter() - started, 1)
    update_metadata(out / MODEL_STEM, lambda meta: meta["recipe"].update(report_seconds=seconds))
    print(f"kp-train: report written in {seconds:.0f} s", file=sys.stderr, flush=True)


def describe() -> str:
    return "; ".join(f"{r.name}: {r.description} ({' + '.join(f'{s.name} {s.epochs} epochs' for s in r.stages)})"
                     for r in RECIPES.values())

