"""Training of KP-Net and the CNN-Net baseline: ``kp-train`` (config file plus flags).

A run folder holds ``config.json``, ``log.csv`` (one row per epoch), ``best.*`` (lowest total validation
loss) and ``last.*`` checkpoints (``.safetensors`` + ``.json``) and ``last_state.safetensors`` (optimizer
and random-generator state for ``--resume``). Ctrl-C writes ``last`` before exiting.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kp_core.checkpoint import (
    CheckpointError,
    atomic_write_json,
    load_model,
    load_tensors,
    read_metadata,
    save_checkpoint,
    save_tensors,
)
from kp_core.conditioning import ObjectSize
from kp_core.devices import native_bf16, resolve_device
from kp_core.placement import serving_metadata
from kp_core.models import PRESETS, KeypointNetPreset, build_model, fit_yaw_template, model_config

from . import __version__, recipes
from .cli import add_config_flags, given, setting
from .data import ValidationSet, ViewSampler, sample_transforms
from .goal_quality import psi_grid, sensor_goal_iou, yaw_errors_deg
from .losses import LossWeights, pair_losses
from .memory import keep_freed_memory
from .metrics import voxel_iou
from .sensor import SensorConfig
from .shapes import MESH_UNITS, UP_AXES, load_shape, metres_per_unit

INPUTS = ("solid", "sensor")
GOAL_CHECK_PSI_DEG = 45.0
"""The per-epoch goal check turns the keypoints by every multiple of this angle."""

TRAINING_PRECISIONS = ("bf16", "tf32", "fp32")
LOG_FIELDS = [
    "epoch", "global_step", "pairs_seen", "wall_s", "train_loss", "train_recon", "train_consistency",
    "train_separation", "train_spread", "val_loss", "val_recon", "val_consistency", "val_separation", "val_spread", "val_iou",
    "val_goal_whole_mean", "val_goal_whole_min", "val_goal_single_mean", "val_goal_single_min",
    "val_yaw_whole_p90_deg", "val_yaw_single_p90_deg",
]


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` in the run folder and in every checkpoint."""

    out: str = setting("runs/kpnet", "run folder")
    preset: str = setting("paper", "architecture: paper (KP-Net), fast (CPU KP-Net), cylinder (z-rotation "
                          "equivariant KP-Net), cnn (CNN-Net), cnn-fast (CPU CNN-Net)", choices=sorted(PRESETS))
    shape: str = setting("mug", "'mug' (built in) or a mesh file (obj, stl, ply, glb, off)")
    up_axis: str = setting("z", "the mesh's up axis", choices=UP_AXES)
    mesh_units: str | None = setting(None, "the unit the mesh file is written in: gives the model a metric size "
                                     "(simulated cameras, the node's grid and object size follow from it)",
                                     choices=sorted(MESH_UNITS))
    num_keypoints: int = setting(32, "keypoints K", aliases=("-k",))
    decoder_channels: int | None = setting(None, "decoder width (default: the preset's)")
    heatmap_temperature: float = setting(1.0, "softmax temperature of the keypoint heatmaps")
    epochs: int = setting(400, "epochs")
    pairs_per_epoch: int = setting(4000, "training pairs per epoch")
    batch_pairs: int = setting(8, "pairs per step (paper: 8)", aliases=("--batch",))
    lr: float = setting(1e-3, "Adam learning rate (with --resume: the rate from there on)")
    lr_final: float | None = setting(None, "cosine decay of the rate from lr at the first step to this at the "
                                     "last (default: constant)")
    alpha: float = setting(1.0, "consistency weight (paper: 1)")
    beta: float = setting(0.1, "separation weight (paper: 0.1)")
    separation_m: float = setting(1000.0, "the separation loss's M (paper: 1000)")
    gamma: float = setting(0.0, "weight of the axis-spread hinge (losses.axis_spread_loss; 0: the paper's losses)")
    spread_radius: float = setting(0.15, "grid units; keypoints closer than this to their vertical axis are penalized")
    scale_min: float = setting(0.75, "smallest per-axis augmentation scale")
    scale_max: float = setting(1.0, "largest per-axis augmentation scale (at most 1: larger would clip)")
    inputs: str = setting("solid", "solid (the paper's voxelized solids) or sensor (simulated depth-sensor clouds)",
                          choices=INPUTS)
    zoom: float = setting(1.0, "grid half extent in normalized shape units (> 1: room for a single view's "
                          "hidden side; sensor inputs: about 1.3)")
    whole_fraction: float = setting(0.3, "sensor inputs: share of clouds fused from several cameras")
    camera_artifacts: float = setting(0.0, "sensor inputs: share of clouds with a real camera's artifacts (up to "
                                      "3 mm depth noise, flying pixels, a ring of table around the base)")
    held_views: float = setting(0.0, "sensor inputs: share of the fused clouds of the object held up by a gripper "
                                "(no table; one camera more, below it, sees the underside)")
    conditioning: bool = setting(False, "sensor inputs: put each cloud through the node's input conditioning "
                                 "(kp_core.conditioning) before the grid, as the node does")
    prior_bias: bool = setting(True, "start the decoder's output bias at the occupancy prior (predicts voxels sooner)")
    goal_check_clouds: int = setting(8, "sensor inputs: whole and single-view clouds scored for goal IoU every epoch")
    seed: int = setting(0, "seed of the run (weights and data)")
    init_from: str | None = setting(None, "start from this checkpoint's weights (same architecture; a new run)",
                                    metavar="CHECKPOINT")
    canonical_yaw: bool = setting(False, "keypoint models: decode at one canonical yaw and turn the output "
                                  "(z-rotation equivariant decoder, kp_core.models.KeypointNet); the yaw template is "
                                  "fitted from the starting encoder's keypoints (--init-from, else the untrained one)")
    freeze_encoder: bool = setting(False, "train the decoder only (the encoder's weights stay as loaded)")
    val_pairs: int = setting(4000, "validation pairs (fixed)")
    val_seed: int = setting(12345, "seed of the validation set")
    val_batch_pairs: int = setting(16, "pairs per validation batch")
    device: str = setting("auto", "auto, cpu, cuda, cuda:1, ...")
    precision: str = setting("auto", "auto (bf16 autocast on GPU and on CPUs with native bf16, else fp32), bf16, "
                             "tf32 or fp32",
                             choices=TRAINING_PRECISIONS + ("auto",))
    channels_last: bool | None = setting(None, "channels-last 3-D convolutions (default: on, on CPUs as on GPUs; "
                                               "bench/bench_train.py times both)")
    compile: bool = setting(False, "torch.compile the model")
    max_minutes: float | None = setting(None, "stop (and checkpoint) after this much training time")
    tensorboard: bool = setting(False, "also log to TensorBoard (needs the tensorboard package)")
    num_threads: int | None = setting(None, "CPU threads for torch")

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        checks = [
            (self.preset in PRESETS, f"preset must be one of {sorted(PRESETS)}"),
            (self.up_axis in UP_AXES, f"up_axis must be one of {UP_AXES}"),
            (self.num_keypoints >= 1, "num_keypoints must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.pairs_per_epoch >= 1, "pairs_per_epoch must be >= 1"),
            (self.batch_pairs >= 1, "batch_pairs must be >= 1"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive number"),
            (self.lr_final is None or 0 <= self.lr_final <= self.lr, "lr_final must be in [0, lr]"),
            (0 <= self.camera_artifacts <= 1, "camera_artifacts must be in [0, 1]"),
            (0 <= self.held_views <= 1, "held_views must be in [0, 1]"),
            (self.inputs == "sensor" or not (self.camera_artifacts or self.held_views or self.conditioning),
             "camera_artifacts, held_views and conditioning need sensor inputs"),
            (self.alpha >= 0 and self.beta >= 0, "alpha and beta must be >= 0"),
            (self.separation_m > 0, "separation_m must be > 0"),
            (self.gamma >= 0 and self.spread_radius >= 0, "gamma and spread_radius must be >= 0"),
            (self.heatmap_temperature > 0, "heatmap_temperature must be > 0"),
            (0 < self.scale_min <= self.scale_max <= 1, "need 0 < scale_min <= scale_max <= 1"),
            (self.val_pairs >= 1 and self.val_batch_pairs >= 1, "val_pairs and val_batch_pairs must be >= 1"),
            (self.precision in TRAINING_PRECISIONS + ("auto",), f"precision must be auto or one of {TRAINING_PRECISIONS}"),
            (self.max_minutes is None or self.max_minutes > 0, "max_minutes must be > 0"),
            (self.shape == "mug" or Path(self.shape).is_file(), f"shape must be 'mug' or a mesh file: {self.shape!r} not found"),
            (self.inputs in INPUTS, f"inputs must be one of {INPUTS}"),
            (math.isfinite(self.zoom) and self.zoom >= 1, "zoom must be >= 1"),
            (0 <= self.whole_fraction <= 1, "whole_fraction must be in [0, 1]"),
            (self.goal_check_clouds >= 0, "goal_check_clouds must be >= 0"),
            (not self.canonical_yaw or isinstance(PRESETS[self.preset], KeypointNetPreset),
             "canonical_yaw needs a keypoint preset"),
            (not self.freeze_encoder or self.init_from, "freeze_encoder needs --init-from (an untrained encoder would stay untrained)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        resolve_device(self.device)

    def architecture(self) -> dict:
        keypoint = isinstance(PRESETS[self.preset], KeypointNetPreset)
        overrides = {"decoder_channels": self.decoder_channels}
        if keypoint:
            overrides.update(num_keypoints=self.num_keypoints, heatmap_temperature=self.heatmap_temperature,
                             canonical_yaw=self.canonical_yaw or None)  # absent unless asked: older checkpoints match
        return model_config(self.preset, **overrides)


class Trainer:
    """One training run: model, optimizer, data, validation, logging, checkpoints."""

    def __init__(self, config: TrainConfig, resume: bool = False):
        self._started = time.perf_counter()
        config.validate()
        self.config = config
        self.out = Path(config.out)
        self.device = resolve_device(config.device)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        precision = config.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" or native_bf16(self.device) else "fp32"
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
        torch.backends.cudnn.allow_tf32 = precision != "fp32"
        self.precision = precision
        self.channels_last = config.channels_last is not False

        torch.manual_seed(config.seed)
        self.shape = load_shape(config.shape, up_axis=config.up_axis, mesh_units=config.mesh_units)
        self.points = self.shape.points.to(self.device)
        self.model = build_model(config.architecture()).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.forward = torch.compile(self.model) if config.compile else self.model
        if config.freeze_encoder:
            self.model.encoder.requires_grad_(False)
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=config.lr)
        self.weights = LossWeights(config.alpha, config.beta, config.separation_m, config.gamma, config.spread_radius)
        self.scale_range = (config.scale_min, config.scale_max)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.validation = ValidationSet(config.val_pairs, config.val_seed, self.scale_range)
        self.keypoint_model = self.model.kind == "keypoint"
        self.sampler = self._sampler(config.whole_fraction)
        self._goal_samplers: dict[str, ViewSampler] = {}  # built on the first goal check
        if config.init_from and not resume:
            self._init_from(config.init_from)
        elif not resume:
            if config.prior_bias:
                self._start_at_prior()
            if config.canonical_yaw:  # psi(R_a k) = psi(k) + a holds for any template of an equivariant encoder
                self._fit_yaw_template()
        self.steps_per_epoch = math.ceil(config.pairs_per_epoch / config.batch_pairs)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_val, self.train_seconds = math.inf, 0.0
        self.run_seconds_before: float | None = 0.0  # earlier processes' share of run_seconds()
        self.metrics: dict = {}
        if resume:
            self._load_state()
            atomic_write_json(self.out / "config.json", dataclasses.asdict(config))  # flags given with --resume stay
        else:
            if (self.out / "last.json").exists():
                raise FileExistsError(f"{self.out} already holds a run: pass --resume to continue it or choose another --out")
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "config.json", dataclasses.asdict(config))
        self.tb = self._tensorboard() if config.tensorboard else None

    def _sampler(self, whole_fraction: float, held: bool = True) -> ViewSampler:
        """Views as the config draws them; ``held`` False: none of the object held up (``held_views`` 0)."""
        cfg = self.config
        sensor = (SensorConfig(whole_fraction=whole_fraction, artifact_fraction=cfg.camera_artifacts,
                               held_fraction=cfg.held_views if held else 0.0)
                  if cfg.inputs == "sensor" else None)
        unit = metres_per_unit(self.shape)
        # None for the 64^3 grid: a solid view at zoom 1 then needs one voxelization, its target being its input.
        to_input = None if self.model.reads_occupancy_grid else self.model.input_from_points
        return ViewSampler(self.points, to_input, sensor, metres_per_unit=unit, zoom=cfg.zoom,
                           scale_range=self.scale_range, object_size=self.object_size(unit) if cfg.conditioning else None)

    def object_size(self, unit: float) -> ObjectSize:
        """The shape's size in metres as the node knows it (from the checkpoint's normalization)."""
        norm = self.shape.normalization
        to_metres = unit / norm["mesh_units_per_grid_unit"]
        return ObjectSize(norm["width"] * to_metres, norm["height"] * to_metres)

    @torch.no_grad()
    def _start_at_prior(self) -> None:
        """Set the decoder's output bias to the logit of the mean target occupancy, so that the first
        steps refine a plausible grid instead of unlearning a 50 % one (from a zero bias, a decoder predicts
        nothing for hundreds of steps)."""
        batch = self.sampler.views(*sample_transforms(8, torch.Generator().manual_seed(0), self.device, self.scale_range),
                                   torch.Generator().manual_seed(0))
        prior = float(batch.targets.mean().clamp(1e-4, 0.5))
        self.model.decoder.out.bias.fill_(math.log(prior / (1 - prior)))

    def _init_from(self, path: str) -> None:
        """Start from another run's weights (a fine-tune): same architecture, fresh optimizer and schedule.

        A ``canonical_yaw`` run may start from a model without it: same weights, and the yaw template is
        fitted from the loaded encoder's keypoints."""
        source, _ = load_model(path)
        plain_arch = {k: v for k, v in self.model.arch.items() if k != "canonical_yaw"}
        if source.arch not in (self.model.arch, plain_arch):
            raise ValueError(f"init_from {path}: architecture {source.arch} differs from this run's {self.model.arch}")
        fit_template = self.model.arch.get("canonical_yaw") and not source.arch.get("canonical_yaw")
        missing, _ = self.model.load_state_dict(source.state_dict(), strict=not fit_template)
        if fit_template:
            if missing != ["yaw_template"]:
                raise ValueError(f"init_from {path}: weights missing beyond the yaw template: {missing}")
            self._fit_yaw_template()

    @torch.no_grad()
    def _fit_yaw_template(self, views: int = 32) -> None:
        """The template of a canonical-yaw decoder: the encoder's keypoints of whole views at known yaws."""
        self.model.eval()
        angle = torch.arange(views, device=self.device) * (2 * math.pi / views)
        batch = self._sampler(1.0).views(angle, torch.ones(views, 3, device=self.device), torch.Generator().manual_seed(0))
        fit_yaw_template(self.model, self.model.encode(self._prepare(batch.inputs)).float(), angle)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ValueError("--tensorboard needs the tensorboard package (pip install tensorboard)") from err
        return SummaryWriter(str(self.out / "tensorboard"))

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _prepare(self, voxels: torch.Tensor) -> torch.Tensor:
        return voxels.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else voxels

    def rate(self) -> float:
        """The learning rate of the next step: ``lr``, or its cosine decay to ``lr_final`` over the run."""
        cfg = self.config
        if cfg.lr_final is None:
            return cfg.lr
        progress = min(1.0, self.global_step / max(1, cfg.epochs * self.steps_per_epoch - 1))
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * progress))

    def train_step(self) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = self.rate()
        batch = self.sampler.pairs(self.config.batch_pairs, self.generator)
        self.model.train()
        with self._autocast():
            output = self.forward(self._prepare(batch.inputs))
        losses = pair_losses(output, batch, self.weights, self.keypoint_model)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean losses and IoU at 0.5 over the fixed validation set."""
        self.model.eval()
        sums: dict[str, float] = {}
        count = 0
        for batch in self.validation.batches(self.sampler, self.config.val_batch_pairs):
            with self._autocast():
                output = self.forward(self._prepare(batch.inputs))
            losses = pair_losses(output, batch, self.weights, self.keypoint_model)
            iou = voxel_iou(torch.sigmoid(output["logits"].float()), batch.targets)
            n = batch.num_pairs
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            sums["iou"] = sums.get("iou", 0.0) + float(iou.mean()) * n
            count += n
        result = {k: v / count for k, v in sums.items()}
        if self.keypoint_model and self.config.inputs == "sensor" and self.config.goal_check_clouds:
            result.update(self.goal_check())
        return result

    def goal_check(self) -> dict[str, float]:
        """Goal IoU at psi = 0, 45, ..., 315 deg on a few fixed whole and single-view clouds, and for a canonical-yaw
        model the 90th percentile of its yaw error on them (degrees). The clouds are the same with and without
        ``held_views`` (a held cloud's draws would shift every later one): runs compare on one yardstick."""
        n, psi = self.config.goal_check_clouds, psi_grid(GOAL_CHECK_PSI_DEG)
        out = {}
        for mode, whole_fraction in (("whole", 1.0), ("single", 0.0)):
            if mode not in self._goal_samplers:
                self._goal_samplers[mode] = self._sampler(whole_fraction, held=False)
            generator = torch.Generator().manual_seed(self.config.val_seed + 1)
            angle, scale = sample_transforms(n, generator, "cpu", self.scale_range)
            scores = sensor_goal_iou(self.model, self._goal_samplers[mode], angle, scale, psi, generator)
            per_psi = scores["iou"].mean(0)
            out[f"goal_{mode}_mean"], out[f"goal_{mode}_min"] = float(per_psi.mean()), float(per_psi.min())
            if "yaw_offset" in scores:
                out[f"yaw_{mode}_p90_deg"] = float(torch.quantile(yaw_errors_deg(scores["yaw_offset"]), 0.9))
        return out

    def metadata(self) -> dict:
        return {
            "train_config": dataclasses.asdict(self.config),
            "normalization": self.shape.normalization,
            "shape": self.shape.name,
            "metrics": self.metrics,
            "progress": {
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "pairs_seen": self.global_step * self.config.batch_pairs, "train_seconds": round(self.train_seconds, 1),
                "run_seconds": self.run_seconds(),
                "best_val_loss": self.best_val,
            },
            "precision": self.precision,
            "device": str(self.device),
            **serving_metadata(self.config.inputs, self.config.zoom, (self.config.scale_min + self.config.scale_max) / 2),
        }

    def run_seconds(self) -> float | None:
        """Seconds of wall time the run has taken so far, across resumes: setting up, steps, validation and
        checkpoints (``train_seconds`` counts the steps alone); None for a run begun before it was recorded."""
        if self.run_seconds_before is None:
            return None
        return round(self.run_seconds_before + time.perf_counter() - self._started, 1)

    def save_last(self) -> None:
        state = {f"optimizer.{i}.{name}": value for i, s in self.optimizer.state_dict()["state"].items() for name, value in s.items()}
        state["generator"] = self.generator.get_state()
        digest = save_tensors(self.out / "last_state.safetensors", state)
        meta = self.metadata()
        meta["resume"] = {"state_sha256": digest, "param_groups": self.optimizer.state_dict()["param_groups"]}
        save_checkpoint(self.out / "last", self.model, meta)

    def _load_state(self) -> None:
        meta = read_metadata(self.out / "last.json")
        if meta["architecture"] != self.model.arch:
            changed = sorted(k for k in set(meta["architecture"]) | set(self.model.arch)
                             if meta["architecture"].get(k) != self.model.arch.get(k))
            raise ValueError(f"--resume {self.out}: the run's architecture cannot change ({', '.join(changed)}: "
                             f"{[meta['architecture'].get(k) for k in changed]} in the run); start a new run, "
                             f"or --init-from it when the architecture is the same")
        weights = load_tensors(self.out / "last.safetensors", meta.get("weights_sha256"))
        self.model.load_state_dict(weights)
        state = load_tensors(self.out / "last_state.safetensors", meta["resume"]["state_sha256"])
        self.generator.set_state(state.pop("generator"))
        optimizer_state: dict = {}
        for key, value in state.items():
            _, index, name = key.split(".", 2)
            optimizer_state.setdefault(int(index), {})[name] = value.to(self.device) if name != "step" else value
        self.optimizer.load_state_dict({"state": optimizer_state, "param_groups": meta["resume"]["param_groups"]})
        for group in self.optimizer.param_groups:  # `--resume RUN --lr X` lowers (or raises) the rate from here on
            group["lr"] = self.config.lr
        progress = meta["progress"]
        self.epoch, self.step_in_epoch = progress["epoch"], progress["step_in_epoch"]
        self.global_step, self.train_seconds = progress["global_step"], progress["train_seconds"]
        self.run_seconds_before = progress.get("run_seconds")
        self.best_val = progress["best_val_loss"]
        self.metrics = meta.get("metrics", {})

    def _log_epoch(self, train: dict, val: dict) -> None:
        row = {
            "epoch": self.epoch + 1, "global_step": self.global_step,
            "pairs_seen": self.global_step * self.config.batch_pairs, "wall_s": round(self.train_seconds, 2),
            **{f"train_{k}": round(v, 6) for k, v in train.items() if k != "loss"}, "train_loss": round(train.get("loss", math.nan), 6),
            **{f"val_{k}": round(v, 6) for k, v in val.items()},
        }
        log = self.out / "log.csv"
        new = not log.exists()
        with open(log, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.tb is not None:
            for key, value in row.items():
                if key not in ("epoch", "global_step") and isinstance(value, float):
                    self.tb.add_scalar(key.replace("_", "/", 1), value, self.global_step)

    def out_of_time(self) -> bool:
        return self.config.max_minutes is not None and self.train_seconds >= 60 * self.config.max_minutes

    def fit(self, label: str = "", resume_dir: Path | None = None) -> Path:
        """Train until ``epochs`` or ``max_minutes``; returns the run folder. ``label`` names the run on the
        progress bar (a recipe's stage); ``resume_dir`` is what ``--resume`` continues after an interrupt (a
        recipe's folder; the run folder by default)."""
        from tqdm import tqdm

        cfg = self.config
        try:
            while self.epoch < cfg.epochs and not self.out_of_time():
                sums: dict[str, float] = {}
                steps = 0
                bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f"{label}epoch {self.epoch + 1}/{cfg.epochs}",
                           leave=False, dynamic_ncols=True, disable=None)
                while self.step_in_epoch < self.steps_per_epoch and not self.out_of_time():
                    start = time.perf_counter()
                    losses = self.train_step()
                    self.train_seconds += time.perf_counter() - start
                    self.step_in_epoch += 1
                    self.global_step += 1
                    steps += 1
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v
                    bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
                    bar.update()
                bar.close()
                if self.step_in_epoch < self.steps_per_epoch:  # cut by max_minutes: --resume finishes the epoch
                    self.save_last()
                    print(f"time limit: stopped at step {self.global_step}, inside epoch {self.epoch + 1}", flush=True)
                    break
                train = {k: v / max(steps, 1) for k, v in sums.items()}
                val = self.validate()
                self.metrics = {"val": val, "train": train, "epoch": self.epoch + 1}
                self._log_epoch(train, val)
                self.epoch += 1
                self.step_in_epoch = 0
                if val["loss"] < self.best_val:
                    self.best_val = val["loss"]
                    save_checkpoint(self.out / "best", self.model, self.metadata())
                self.save_last()
                print(
                    f"epoch {self.epoch}/{cfg.epochs} step {self.global_step} ({self.train_seconds:.0f} s): "
                    + " ".join(f"train_{k}={v:.4f}" for k, v in train.items())
                    + " " + " ".join(f"val_{k}={v:.4f}" for k, v in val.items()),
                    flush=True,
                )
        except KeyboardInterrupt:
            self.save_last()
            print(f"\ninterrupted: wrote {self.out / 'last.safetensors'}; continue with --resume {resume_dir or self.out}",
                  file=sys.stderr)
            raise
        finally:
            if self.tb is not None:
                self.tb.close()
        return self.out


def load_config_file(path: str) -> dict:
    """Read a YAML or JSON config file of :class:`TrainConfig` fields."""
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown config fields {unknown}")
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kp-train", description="Train KP-Net or the CNN-Net baseline on one shape.")
    parser.add_argument("--config", help="YAML or JSON file of config fields; flags override it")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run (or recipe) in RUN_DIR from its last checkpoint")
    parser.add_argument("--recipe", choices=sorted(recipes.RECIPES),
                        help="a whole training in one command, into --out (the flags given apply to every stage): "
                             + recipes.describe())
    add_config_flags(parser, TrainConfig)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict = {}
    if args.resume:
        values.update(json.loads((Path(args.resume) / "config.json").read_text()))
        values["out"] = args.resume
    if args.config:
        values.update(load_config_file(args.config))
    values.update(given(args, TrainConfig))
    return TrainConfig(**values)


def run_recipe(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``kp-train --recipe NAME --out DIR`` or ``kp-train --resume DIR`` of a recipe's folder."""
    flags = {**(load_config_file(args.config) if args.config else {}), **given(args, TrainConfig)}
    try:
        if args.recipe:
            if args.resume:
                raise ValueError("--recipe starts a run; continue one with --resume DIR alone")
            if "out" not in flags:
                raise ValueError("--recipe needs --out DIR")
            out = Path(flags.pop("out"))
            recipes.start(args.recipe, flags, out)
            flags = {}
        else:
            out = Path(args.resume)
            flags.pop("out", None)
            recipes.read(out)
    except (ValueError, FileExistsError, OSError, json.JSONDecodeError) as err:
        parser.error(str(err))
    try:
        weights = recipes.run(out, flags)
    except KeyboardInterrupt:
        return 130
    except (ValueError, CheckpointError) as err:
        parser.error(str(err))
    print(f"done: {weights}" if weights.name.startswith(recipes.MODEL_STEM) else f"stopped: continue with --resume {out}")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    # SIGTERM (kill, a job scheduler) stops like Ctrl-C: write `last`, exit 130. SIGINT too when the shell
    # that started us in the background set it to "ignore".
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.recipe or (args.resume and (Path(args.resume) / recipes.RECIPE_FILE).is_file()):
        return run_recipe(parser, args)
    try:
        if args.resume and not (Path(args.resume) / "last.json").is_file():
            raise ValueError(f"--resume {args.resume}: no last checkpoint there")
        config = config_from_args(args)
        trainer = Trainer(config, resume=bool(args.resume))
    except (ValueError, FileExistsError, FileNotFoundError, CheckpointError, json.JSONDecodeError) as err:
        parser.error(str(err))
    print(f"kp-train {__version__}: {config.preset} on {trainer.device} ({trainer.precision}), "
          f"{sum(p.numel() for p in trainer.model.parameters()) / 1e6:.2f} M parameters -> {trainer.out}", flush=True)
    try:
        out = trainer.fit()
    except KeyboardInterrupt:
        return 130
    best = f"best {out / 'best.safetensors'} (val loss {trainer.best_val:.4f}), " if (out / "best.json").exists() else ""
    print(f"done: {best}last {out / 'last.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
