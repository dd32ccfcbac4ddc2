import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from kp_core.checkpoint import load_model
from kp_training.train import TrainConfig, Trainer, main

TINY = ["--preset", "fast", "--batch-pairs", "2", "--pairs-per-epoch", "8", "--val-pairs", "4", "--seed", "3",
        "--num-threads", "2"]


def read_log(run):
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


def test_short_cpu_run_lowers_the_loss_and_writes_checkpoints(tmp_path):
    run = tmp_path / "run"
    # Without the prior bias the untrained decoder starts far from the data, so a few steps lower the loss.
    assert main(TINY + ["--epochs", "3", "--no-prior-bias", "--out", str(run)]) == 0
    rows = read_log(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert float(rows[-1]["train_recon"]) < float(rows[0]["train_recon"])
    model, meta = load_model(run)
    assert meta["train_config"]["preset"] == "fast" and meta["normalization"]["source"] == "procedural:mug"
    assert meta["progress"]["pairs_seen"] <= 24 and "val" in meta["metrics"]
    assert json.loads((run / "config.json").read_text())["seed"] == 3


def test_resume_continues_where_the_run_stopped(tmp_path):
    run = tmp_path / "run"
    assert main(TINY + ["--epochs", "1", "--out", str(run)]) == 0
    with pytest.raises(SystemExit) as exit_info:  # refuses to overwrite a run
        main(TINY + ["--epochs", "1", "--out", str(run)])
    assert exit_info.value.code == 2
    assert main(["--resume", str(run), "--epochs", "2"]) == 0
    rows = read_log(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2] and int(rows[-1]["global_step"]) == 8
    _, meta = load_model(run / "last.safetensors")
    assert meta["progress"]["epoch"] == 2
    assert meta["resume"]["param_groups"][0]["lr"] == 1e-3
    assert main(["--resume", str(run), "--epochs", "3", "--lr", "2e-4"]) == 0  # a new rate from here on
    _, meta = load_model(run / "last.safetensors")
    assert meta["resume"]["param_groups"][0]["lr"] == 2e-4 and meta["train_config"]["lr"] == 2e-4
    assert main(["--resume", str(run), "--epochs", "4"]) == 0  # and stays on the next resume
    _, meta = load_model(run / "last.safetensors")
    assert meta["resume"]["param_groups"][0]["lr"] == 2e-4


def test_an_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    """Resume restores weights, optimizer moments and the data generator: the same losses as one long run."""
    assert main(TINY + ["--epochs", "3", "--out", str(tmp_path / "whole")]) == 0
    assert main(TINY + ["--epochs", "1", "--out", str(tmp_path / "split")]) == 0
    assert main(["--resume", str(tmp_path / "split"), "--epochs", "3"]) == 0
    whole, split = read_log(tmp_path / "whole"), read_log(tmp_path / "split")
    for a, b in zip(whole, split, strict=True):
        for key in ("train_loss", "val_loss", "val_recon"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-7), (a["epoch"], key)


def test_a_time_limit_inside_an_epoch_logs_it_once_after_resume(tmp_path):
    run = tmp_path / "run"
    # 1e-4 minutes: the first step already passes it, deep inside the first epoch of 4 steps.
    assert main(TINY + ["--epochs", "1", "--max-minutes", "0.0001", "--out", str(run)]) == 0
    assert not (run / "log.csv").exists() and (run / "last.json").exists()
    _, meta = load_model(run / "last")
    assert meta["progress"]["epoch"] == 0 and 0 < meta["progress"]["step_in_epoch"] < 4
    first = meta["progress"]["run_seconds"]
    assert first >= meta["progress"]["train_seconds"] > 0  # setting up and the checkpoint count too
    assert main(["--resume", str(run), "--max-minutes", "100"]) == 0
    assert [int(r["epoch"]) for r in read_log(run)] == [1]
    _, meta = load_model(run / "last")
    assert meta["metrics"]["epoch"] == meta["progress"]["epoch"] == 1 and meta["progress"]["global_step"] == 4
    # The resumed process adds its own time to the first one's.
    assert meta["progress"]["run_seconds"] > first and meta["progress"]["run_seconds"] >= meta["progress"]["train_seconds"]


def test_resume_refuses_to_change_the_architecture(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(TINY + ["--epochs", "1", "--out", str(run)]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", str(run), "--epochs", "2", "--num-keypoints", "16"])
    assert exit_info.value.code == 2 and "architecture cannot change (num_keypoints" in capsys.readouterr().err


def test_same_seed_same_run(tmp_path):
    for name in ("a", "b"):
        assert main(TINY + ["--epochs", "1", "--out", str(tmp_path / name)]) == 0
    a, b = read_log(tmp_path / "a")[0], read_log(tmp_path / "b")[0]
    assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("preset: fast\nepochs: 7\nalpha: 5.0\n")
    args = ["--config", str(cfg), "--epochs", "1", "--batch-pairs", "2", "--pairs-per-epoch", "2", "--val-pairs", "2",
            "--out", str(tmp_path / "run")]
    assert main(args) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["epochs"] == 1 and config["alpha"] == 5.0 and config["preset"] == "fast"


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path):
    assert main(TINY + ["--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    source, _ = load_model(tmp_path / "a" / "last")
    # No steps: the fine-tune's checkpoint holds exactly the source weights, not a fresh (prior-bias) start.
    trainer = Trainer(TrainConfig(out=str(tmp_path / "b"), preset="fast", init_from=str(tmp_path / "a" / "last")))
    for name, value in source.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    assert trainer.global_step == 0
    with pytest.raises(ValueError, match="architecture"):
        Trainer(TrainConfig(out=str(tmp_path / "c"), preset="cylinder", init_from=str(tmp_path / "a" / "last")))


def test_canonical_yaw_fine_tune_fits_the_template_and_trains_the_decoder_only(tmp_path):
    assert main(TINY + ["--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    source, _ = load_model(tmp_path / "a" / "last")
    assert main(TINY + ["--epochs", "1", "--out", str(tmp_path / "b"), "--init-from", str(tmp_path / "a" / "last"),
                        "--canonical-yaw", "--freeze-encoder"]) == 0
    tuned, _ = load_model(tmp_path / "b" / "last")
    assert tuned.arch == {**source.arch, "canonical_yaw": True}
    assert float(tuned.yaw_template.norm(dim=-1).mean()) > 0  # fitted from the source encoder's keypoints
    for name, value in source.encoder.state_dict().items():
        assert torch.equal(tuned.encoder.state_dict()[name], value), name  # frozen
    changed = [n for n, v in source.decoder.state_dict().items() if not torch.equal(tuned.decoder.state_dict()[n], v)]
    assert changed  # the decoder trained
    # A canonical run continues from its own checkpoints like any other (template included).
    assert main(["--resume", str(tmp_path / "b"), "--epochs", "2"]) == 0
    assert load_model(tmp_path / "b" / "last")[0].arch["canonical_yaw"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--preset", "nope"], "invalid choice"),
        (["--batch-pairs", "two"], "invalid int value"),
        (["--shape", "/no/such/mesh.obj"], "not found"),
        (["--lr", "-1"], "lr must be a positive number"),
        (["--scale-min", "0.9", "--scale-max", "0.8"], "scale_min"),
        (["--device", "cuda:0"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], "device"),
        (["--resume", "/no/such/run"], "no last checkpoint"),
        (["--config", "/no/such/config.yaml"], "No such file"),
        (["--init-from", "/no/such/checkpoint"], "not found"),
        (["--gamma", "-1"], "gamma"),
        (["--lr", "1e-3", "--lr-final", "1e-2"], "lr_final must be in [0, lr]"),
        (["--camera-artifacts", "0.5"], "need sensor inputs"),
        (["--held-views", "0.3"], "need sensor inputs"),
        (["--inputs", "sensor", "--held-views", "1.5"], "held_views must be in [0, 1]"),
        (["--mesh-units", "furlong"], "invalid choice"),
        (["--recipe", "node", "--resume", "/tmp"], "--recipe starts a run"),
        (["--recipe", "nope"], "invalid choice"),
        (["--freeze-encoder"], "freeze_encoder needs --init-from"),
    ],
)
def test_bad_arguments_exit_with_a_clear_error(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_config_fields_are_refused(tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"epochs": 1, "learning_rate": 0.1}))
    with pytest.raises(SystemExit):
        main(["--config", str(cfg)])
    assert "unknown config fields ['learning_rate']" in capsys.readouterr().err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_writes_a_final_checkpoint(tmp_path, stop):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "kp_training.train", *TINY, "--epochs", "1000", "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "log.csv").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)  # somewhere inside the second epoch
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    _, meta = load_model(run / "last")
    assert meta["progress"]["global_step"] >= 4


def test_trainer_refuses_invalid_config_before_doing_work(tmp_path):
    with pytest.raises(ValueError, match="batch_pairs"):
        Trainer(TrainConfig(out=str(tmp_path), batch_pairs=0))
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_trains_in_bf16_on_a_cpu_with_native_bf16(tmp_path, monkeypatch, native, expected):
    monkeypatch.setattr("kp_training.train.native_bf16", lambda device: native)  # as kp_core.devices reads the CPU
    trainer = Trainer(TrainConfig(out=str(tmp_path), preset="fast", pairs_per_epoch=2, batch_pairs=2, val_pairs=1,
                                  num_threads=2))
    assert trainer.precision == expected
    with trainer._autocast():
        assert torch.is_autocast_enabled("cpu") == (expected == "bf16")
    assert Trainer(TrainConfig(out=str(tmp_path / "fp32"), preset="fast", precision="fp32")).precision == "fp32"


def test_the_rate_decays_on_a_cosine_from_lr_to_lr_final(tmp_path):
    trainer = Trainer(TrainConfig(out=str(tmp_path), preset="fast", epochs=2, pairs_per_epoch=6, batch_pairs=2,
                                  val_pairs=1, lr=1e-3, lr_final=1e-4, num_threads=2))
    rates = []
    for step in range(trainer.config.epochs * trainer.steps_per_epoch):
        trainer.global_step = step
        rates.append(trainer.rate())
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert rates[len(rates) // 2 - 1] > 5.5e-4 > rates[len(rates) // 2]  # halfway between: the cosine's middle
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_canonical_yaw_from_the_first_step_fits_the_template_from_the_untrained_encoder(tmp_path):
    from kp_core.geometry import yaw_to_template

    trainer = Trainer(TrainConfig(out=str(tmp_path), preset="cylinder", inputs="sensor", zoom=1.3, canonical_yaw=True,
                                  epochs=1, pairs_per_epoch=2, batch_pairs=1, val_pairs=1, goal_check_clouds=2,
                                  num_threads=2))
    template = trainer.model.yaw_template
    assert float(template.norm(dim=-1).mean()) > 0  # a layout with a horizontal spread (small before training)
    # Equivariance makes any such template a yaw reference: the mug turned by a quarter turn reads psi + pi / 2.
    from kp_core.geometry import rotate_z_points

    mug = trainer.points[::4][None] * 0.8
    turned = rotate_z_points(mug, torch.tensor([math.pi / 2]))
    with torch.no_grad():
        keypoints = trainer.model.encode(trainer.model.input_from_points(torch.cat([mug, turned])))
    psi = yaw_to_template(keypoints, template)
    turn = float(torch.remainder(psi[1] - psi[0] + math.pi, 2 * math.pi) - math.pi)
    assert turn == pytest.approx(math.pi / 2, abs=0.01)
    # The per-epoch goal check reports the yaw error it reads (the log's val_yaw_*_p90_deg).
    check = trainer.goal_check()
    assert 0 <= check["yaw_whole_p90_deg"] <= 180 and 0 <= check["yaw_single_p90_deg"] <= 180


def test_the_goal_check_is_one_yardstick_with_and_without_held_views(tmp_path):
    """Held clouds draw more at random; the per-epoch goal check must score the same clouds either way."""
    from kp_perception import default_model_path

    checks = []
    for held in (0.0, 0.5):  # a trained model: its scores tell the clouds apart
        config = TrainConfig(out=str(tmp_path / str(held)), preset="cylinder", canonical_yaw=True, inputs="sensor",
                             zoom=1.3, held_views=held, init_from=str(default_model_path()), epochs=1,
                             pairs_per_epoch=2, batch_pairs=1, val_pairs=1, goal_check_clouds=4, num_threads=2)
        checks.append(Trainer(config).goal_check())
    assert checks[0] == checks[1]


def test_yaw_errors_are_angles_from_the_offsets_circular_mean():
    from kp_training.goal_quality import yaw_errors_deg

    offsets = torch.deg2rad(torch.tensor([178.0, -178.0, 175.0, -175.0, 180.0]))  # about 180 deg, across the wrap
    torch.testing.assert_close(yaw_errors_deg(offsets), torch.tensor([2.0, 2.0, 5.0, 5.0, 0.0]), atol=1e-3, rtol=0)
