"""kp-train --recipe: a whole training in one command, continued across stages by --resume."""

import json

import pytest
import torch

from kp_core.checkpoint import load_model, read_metadata
from kp_core.pipeline import Pipeline
from kp_training import recipes
from kp_training.recipes import Recipe, Stage
from kp_training.train import main

TINY = Recipe("tiny", "two short stages", dict(preset="fast", inputs="sensor", zoom=1.3, batch_pairs=1, pairs_per_epoch=2,
                                               val_pairs=1, goal_check_clouds=0, num_threads=2, lr=1e-3),
              (Stage("first", 1), Stage("second", 2, dict(freeze_encoder=True, lr=1e-4, lr_final=1e-5))), report=True)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "tiny", TINY)
    reports = []
    monkeypatch.setattr(recipes, "write_report", lambda out, given: reports.append(out) or (out / "report.md").write_text("r"))
    return reports


def test_each_stage_starts_from_the_last_ones_best_and_the_flags_apply_to_every_stage(tmp_path):
    first, second = recipes.stage_configs(TINY, {"seed": 7, "lr": 5e-4}, tmp_path)
    assert first["out"] == str(tmp_path / "stage1-first") and "init_from" not in first
    assert second["init_from"] == str(tmp_path / "stage1-first" / "best")
    assert (first["epochs"], second["epochs"]) == (1, 2)
    assert first["seed"] == second["seed"] == 7 and first["lr"] == second["lr"] == 5e-4  # the user's flags win
    assert second["freeze_encoder"] and second["lr_final"] == 1e-5 and "freeze_encoder" not in first


def test_a_run_keeps_the_stages_it_started_with_when_the_recipe_is_revised(tmp_path, tiny, monkeypatch):
    recipes.start("tiny", {"seed": 7}, tmp_path / "run")
    monkeypatch.setitem(recipes.RECIPES, "tiny", Recipe("tiny", "revised", dict(TINY.fields, lr=0.1), (Stage("only", 5),)))
    recipe, given = recipes.read(tmp_path / "run")
    assert recipe.stages == TINY.stages and given == {"seed": 7}
    assert recipe.fields == TINY.fields and recipe.report


def test_the_cpu_reproduction_trains_kp_net_and_cnn_net_alike_but_for_the_model(tmp_path):
    """Issue: KP-Net and CNN-Net on the same pairs, with the same decoder width, each the paper's losses."""
    from kp_core.models import build_model, model_config
    from kp_training.train import TrainConfig

    kp, cnn = (recipes.validate(recipes.RECIPES[name], {}, tmp_path / name) for name in ("paper-cpu", "cnn-cpu"))
    for kp_stage, cnn_stage in zip(kp, cnn):
        differ = {k for k in kp_stage.keys() | cnn_stage.keys() if kp_stage.get(k) != cnn_stage.get(k)}
        assert differ <= {"preset", "decoder_channels", "out", "init_from"}
    models = [build_model(model_config(c.preset, decoder_channels=c.decoder_channels))
              for c in (TrainConfig(**kp[0]), TrainConfig(**cnn[0]))]
    assert [m.kind for m in models] == ["keypoint", "cnn"]
    shapes = [{k: v.shape for k, v in m.decoder.state_dict().items() if k != "fc.weight"} for m in models]
    assert shapes[0] == shapes[1]  # the same decoder but for its input: 3 K = 96 keypoint coordinates or l = 128
    # Encoders of one width too: 16 channels at the full grid, the fast KP-Net's first layer.
    assert [next(c for c in m.modules() if isinstance(c, torch.nn.Conv3d)).out_channels for m in models] == [16, 16]
    config = TrainConfig(**kp[0])
    assert (config.inputs, config.batch_pairs, config.alpha, config.beta, config.num_keypoints) == ("solid", 8, 1.0, 0.1, 32)
    assert config.lr_final is None and TrainConfig(**kp[1]).lr_final < TrainConfig(**kp[1]).lr  # constant, then anneal
    ours = recipes.validate(recipes.RECIPES["cylinder-cpu"], {}, tmp_path / "ours")
    for kp_stage, our_stage in zip(kp, ours):
        assert {k for k in kp_stage.keys() | our_stage.keys() if kp_stage.get(k) != our_stage.get(k)} <= {
            "preset", "canonical_yaw", "gamma", "out", "init_from"}


def test_a_recipe_stopped_in_its_first_stage_resumes_and_ends_with_a_model_the_node_serves(tmp_path, tiny, capsys):
    out = tmp_path / "run"
    assert main(["--recipe", "tiny", "--out", str(out), "--max-minutes", "0.00001"]) == 0
    assert f"continue with --resume {out}" in capsys.readouterr().out
    assert (out / "stage1-first" / "last.json").is_file() and not (out / "stage2-second").exists()
    assert main(["--resume", str(out), "--max-minutes", "100"]) == 0  # flags given with --resume apply from there on
    assert "done: " in capsys.readouterr().out
    meta = read_metadata(out)  # a recipe's folder means its model
    assert [s["stage"] for s in meta["recipe"]["stages"]] == ["first", "second"]
    assert [s["global_step"] for s in meta["recipe"]["stages"]] == [2, 4]
    assert all(s["run_seconds"] >= s["train_seconds"] > 0 for s in meta["recipe"]["stages"])
    second, second_meta = load_model(out / "stage2-second" / "best")
    model, _ = load_model(out)
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), second.state_dict().values()))
    first, _ = load_model(out / "stage1-first" / "last")
    assert all((a == b).all() for a, b in zip(first.encoder.state_dict().values(), model.encoder.state_dict().values()))
    assert second_meta["train_config"]["max_minutes"] == 100
    assert tiny == [out] and "## Time to quality" in (out / "report.md").read_text()
    assert (out / "time_to_quality.png").read_bytes().startswith(b"\x89PNG")
    table = recipes.curve_table(recipes.stage_logs(out, TINY))
    assert "| first | 1 | 2 |" in table and "| second | 2 | 4 |" in table
    assert Pipeline(out).encode(_mug_cloud()).keypoints.shape == (model.num_keypoints, 3)
    # Run again: nothing to do, the model stays; a new recipe in the same folder is refused.
    assert main(["--resume", str(out)]) == 0 and tiny == [out]
    with pytest.raises(SystemExit) as exit_info:
        main(["--recipe", "tiny", "--out", str(out)])
    assert exit_info.value.code == 2 and "already holds a run" in capsys.readouterr().err
    assert json.loads((out / "recipe.json").read_text())["recipe"] == "tiny"


def test_a_canonical_yaw_recipe_ends_with_the_nodes_yaw_spread_calibrated(tmp_path, tiny, monkeypatch):
    from kp_training import yaw_calibration

    canonical = Recipe("tiny-yaw", "one stage of a canonical-yaw model", dict(TINY.fields, preset="cylinder",
                       canonical_yaw=True), TINY.stages[:1], report=True)
    monkeypatch.setitem(recipes.RECIPES, "tiny-yaw", canonical)
    calibrate = yaw_calibration.calibrate
    monkeypatch.setattr(yaw_calibration, "calibrate", lambda checkpoint: calibrate(checkpoint, views=1, bins=2))
    out = tmp_path / "run"
    assert main(["--recipe", "tiny-yaw", "--out", str(out)]) == 0
    calibration = read_metadata(out)["yaw_calibration"]
    assert calibration["views"] == 5 and len(calibration["spread_rad"]) == 2 and calibration["seconds"] > 0
    pipeline = Pipeline(out)
    assert pipeline.pose(pipeline.encode(_mug_cloud())).yaw_spread in calibration["spread_rad"]


def test_an_interrupted_recipe_says_to_resume_the_recipe_not_its_stage(tmp_path, tiny, capsys, monkeypatch):
    from kp_training.train import Trainer

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_step", interrupt)
    out = tmp_path / "run"
    assert main(["--recipe", "tiny", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"continue with --resume {out}\n" in err and "stage1-first\n" not in err.split("continue with")[-1]
    assert (out / "stage1-first" / "last.json").is_file()


def _mug_cloud():
    from kp_training.shapes import load_shape

    mug = load_shape("mug")
    norm = mug.normalization
    return mug.points[::10].double().numpy() * norm["mesh_units_per_grid_unit"]


@pytest.mark.parametrize("args, message", [
    (["--recipe", "node", "--shape", "MESH"], "needs --mesh-units for a mesh file"),
    (["--recipe", "node"], "--recipe needs --out"),
    (["--recipe", "node", "--out", "OUT", "--batch-pairs", "0"], "batch_pairs must be >= 1"),
])
def test_bad_recipe_arguments_exit_with_a_clear_error(tmp_path, capsys, args, message):
    import trimesh

    mesh = tmp_path / "jug.stl"
    trimesh.creation.box(extents=(1.0, 1.0, 2.0)).export(mesh)
    args = [str(mesh) if a == "MESH" else str(tmp_path / "run") if a == "OUT" else a for a in args]
    if "--out" not in args and "needs --out" not in message:
        args += ["--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written: the corrected command starts afresh


def test_a_published_run_keeps_its_layout_and_leaves_the_weights_out(recipe_run, tmp_path):
    dest = tmp_path / "docs" / "recipes" / "mug"
    copied = {p.relative_to(dest).as_posix() for p in recipes.publish(recipe_run, dest)}
    assert copied == {"recipe.json", "model.json", "stage1-shape/log.csv", "stage1-shape/config.json",
                      "stage2-operating-point/log.csv", "stage2-operating-point/config.json"}
    assert not list(dest.rglob("*.safetensors"))
    assert recipes.time_to_quality(dest)["table"] == recipes.time_to_quality(recipe_run)["table"]


def test_a_run_published_with_its_weights_carries_the_models_files_and_no_stage_checkpoints(recipe_run, tmp_path):
    dest = tmp_path / "published"
    copied = {p.relative_to(dest).as_posix() for p in recipes.publish(recipe_run, dest, weights=True)}
    assert {"model.safetensors", "model.json"} <= copied and not {p for p in copied if p.startswith("stage") and
                                                                   p.endswith(".safetensors")}
    assert (dest / "model.safetensors").read_bytes() == (recipe_run / "model.safetensors").read_bytes()


def test_publishing_weights_refuses_an_unfinished_run_and_weights_too_large_to_commit(recipe_run, tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "COMMITTED_MAX_BYTES", 3)
    with pytest.raises(ValueError, match="MB a repository holds"):
        recipes.publish(recipe_run, tmp_path / "large", weights=True)
    (recipe_run / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="has not finished"):
        recipes.publish(recipe_run, tmp_path / "unfinished", weights=True)
    assert not (tmp_path / "large").exists() and not (tmp_path / "unfinished").exists()


def test_time_to_quality_counts_minutes_from_the_recipes_start_across_stages(recipe_run, tmp_path):
    entry = recipes.time_to_quality(recipe_run, figure=tmp_path / "curve.png")
    assert entry["recipe"] == "node" and entry["given"] == {"seed": 3}
    assert [s["global_step"] for s in entry["stages"]] == [200, 200]
    rows = [line for line in entry["table"].splitlines() if line.startswith("| shape") or line.startswith("| operating")]
    # Each stage's log counts its own step time from 0; the second stage's 100 s and 200 s follow the first's 200 s.
    assert [row.split(" | ")[3] for row in rows] == ["1.7", "3.3", "5.0", "6.7"]
    assert rows[-1].startswith("| operating-point | 2 | 200 | 6.7 | 0.200 | 0.250 |")
    assert entry["figure"] == "curve.png" and (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")


def test_a_recipes_model_counts_the_pairs_of_every_stage_not_its_last_stages_alone():
    from kp_training.report import training_length

    stages = [{"stage": "constant-rate", "epochs": 60, "global_step": 3000},
              {"stage": "anneal", "epochs": 15, "global_step": 750}]
    recipe_model = {"train_config": {"batch_pairs": 8}, "progress": {"pairs_seen": 6000, "epoch": 15},
                    "recipe": {"name": "paper-cpu", "stages": stages}}
    assert training_length(recipe_model) == (30_000, 75)
    plain = {"train_config": {"batch_pairs": 8}, "progress": {"pairs_seen": 6000, "epoch": 15}}
    assert training_length(plain) == (6000, 15)


def test_a_reports_recipe_section_adds_the_runs_parts_up_when_each_was_recorded(recipe_run):
    from kp_training.report import recipe_runs_markdown

    meta = json.loads((recipe_run / "model.json").read_text())
    older = "\n".join(recipe_runs_markdown([recipes.time_to_quality(recipe_run)], recipe_run))
    assert "| shape | 2 | 200 | 3.3 | - |" in older and "from its first stage's start to its end: - min" in older
    for stage, seconds in zip(meta["recipe"]["stages"], (300.0, 240.0)):
        stage["run_seconds"] = seconds
    meta["recipe"]["report_seconds"] = 120.0
    meta["yaw_calibration"] = {"seconds": 60.0}
    (recipe_run / "model.json").write_text(json.dumps(meta))
    text = "\n".join(recipe_runs_markdown([recipes.time_to_quality(recipe_run)], recipe_run))
    assert "| shape | 2 | 200 | 3.3 | 5.0 |" in text and "| operating-point | 2 | 200 | 3.3 | 4.0 |" in text
    assert "Yaw calibration 1.0 min, report 2.0 min; the whole run, from its first stage's start to its end: 12.0 min." in text


def test_an_unfinished_recipe_has_no_stages_yet_and_the_rows_it_has(recipe_run):
    (recipe_run / "model.json").unlink()
    for path in (recipe_run / "stage2-operating-point").iterdir():
        path.unlink()
    entry = recipes.time_to_quality(recipe_run)
    assert entry["stages"] == [] and "| operating-point" not in entry["table"] and "| shape | 2 | 200 |" in entry["table"]


def test_publishing_never_replaces_a_folder_that_is_not_an_earlier_copy(recipe_run, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "publish_recipe.py"
    other = tmp_path / "docs"
    (other / "keep.md").parent.mkdir()
    (other / "keep.md").write_text("mine")
    refused = subprocess.run([sys.executable, str(script), str(recipe_run), str(other)], capture_output=True, text=True)
    assert refused.returncode == 2 and "not a published copy" in refused.stderr and (other / "keep.md").is_file()
    copy = tmp_path / "copy"
    for _ in range(2):  # a second publication replaces the first
        done = subprocess.run([sys.executable, str(script), str(recipe_run), str(copy)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert (copy / "recipe.json").is_file() and not list(copy.rglob("*.safetensors"))
    for _ in range(2):  # a copy with its weights is a published copy too
        done = subprocess.run([sys.executable, str(script), "--weights", str(recipe_run), str(copy)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert [p.name for p in copy.rglob("*.safetensors")] == ["model.safetensors"]
    (recipe_run / "model.safetensors").unlink()  # unfinished: refused, and the earlier copy is left as it was
    refused = subprocess.run([sys.executable, str(script), "--weights", str(recipe_run), str(copy)],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "has not finished" in refused.stderr
    assert (copy / "model.safetensors").is_file() and not copy.with_name("copy.publishing").exists()
