import csv
import json
import math

import pytest
import torch
from torch import nn

from kp_training import evaluate as ev
from kp_training import protocols
from kp_core.checkpoint import save_checkpoint
from kp_core.geometry import rotate_z_points, voxel_centers
from kp_core.models import build_model, model_config
from kp_training.train import main as train_main
from kp_core.voxelize import voxelize

TINY_EVAL = ["--samples", "3", "--angles", "3", "--poses", "2", "--pose-angles", "3", "--circle-angles", "4",
             "--equivariance-samples", "2", "--figure-examples", "2", "--strip-angles", "3", "--batch", "4",
             "--num-threads", "2", "--device", "cpu", "--sensor-poses", "2", "--sensor-psi-step", "90"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def kp_run(tmp_path_factory):
    """A really trained (if tiny) KP-Net: kp-train with the fast preset on a handful of pairs."""
    run = tmp_path_factory.mktemp("kp") / "run"
    args = ["--preset", "fast", "--decoder-channels", "32", "--epochs", "1", "--batch-pairs", "2",
            "--pairs-per-epoch", "4", "--val-pairs", "2", "--seed", "1", "--num-threads", "2", "--out", str(run)]
    assert train_main(args) == 0
    return run


@pytest.fixture(scope="module")
def cnn_ckpt(tmp_path_factory):
    """An untrained, slim CNN-Net saved like a training run would."""
    torch.manual_seed(0)
    model = build_model(model_config("cnn", decoder_channels=32, encoder_channels=[8, 16, 32, 64]))
    stem = tmp_path_factory.mktemp("cnn") / "cnn"
    save_checkpoint(stem, model, {"train_config": {"preset": "cnn", "shape": "mug", "up_axis": "z", "epochs": 0}})
    return stem.with_suffix(".safetensors")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_full_run_writes_every_output(kp_run, cnn_ckpt, tmp_path, recipe_run):
    out, md = tmp_path / "results", tmp_path / "docs" / "RESULTS.md"
    argv = ["--kp", str(kp_run), "--cnn", str(cnn_ckpt), "--out", str(out), "--results-md", str(md),
            "--note", "tiny test models", "--kp-compare", str(kp_run / "last.safetensors"),
            "--recipe-run", str(recipe_run), "--recipe-run", str(recipe_run)] + TINY_EVAL
    assert ev.main(argv) == 0
    results = json.loads((out / "results.json").read_text())

    rep = results["representation"]
    assert len(rep["transforms"]["angle"]) == 3
    for method in ("KP-Net", "CNN-Net", "KP-Net (compared)"):
        assert set(rep["per_example"][method]) == {"bce", "iou", "chamfer", "distance"}
        assert all(len(v) == 3 for v in rep["per_example"][method].values())
        s = rep["summary"][method]
        for metric in ("iou", "bce"):  # the summary summarizes the examples
            assert s[metric]["mean"] == pytest.approx(sum(rep["per_example"][method][metric]) / 3)
    # --kp-compare is the same one-epoch run's last checkpoint (its best): the same views give the same grids
    for metric in ("iou", "bce"):
        assert rep["per_example"]["KP-Net (compared)"][metric] == pytest.approx(rep["per_example"]["KP-Net"][metric])
    floor = rep["summary"]["Ground truth (sampling floor)"]["chamfer"]
    assert floor["mean"] > 1.0  # the paper's Chamfer is far from 0 even for a perfect reconstruction

    interp = results["interpolation"]
    assert interp["psi_deg"] == pytest.approx([0.0, 30.0, 60.0])
    assert set(interp["curves"]) == {"KP-Net", "KP-Net (Interp.)", "CNN-Net", "KP-Net (compared)"}
    assert interp["curves"]["KP-Net (compared)"]["iou"] == pytest.approx(interp["curves"]["KP-Net"]["iou"])
    claim = interp["claim"]
    assert claim["psi_deg"] == pytest.approx(30.0) and claim["poses"]["count"] == 2  # the angle nearest 45 deg of 0, 30, 60
    assert claim["base"]["kp"] == pytest.approx(interp["curves"]["KP-Net"]["iou"][1])
    assert all(len(v) == 3 for m in interp["curves"].values() for v in m.values())
    avg = interp["pose_average"]
    assert len(avg["psi_deg"]) == 3 and len(avg["poses"]["angle_deg"]) == 2
    assert all(len(avg[s][m]["iou"]) == 3 for s in ("mean", "std") for m in interp["curves"])
    circle = interp["circle"]
    assert circle["psi_deg"] == pytest.approx([0, 90, 180, 270]) and len(circle["pose_mean_iou"]) == 4

    eq = results["equivariance"]
    assert set(eq) == {"rotation", "scale", "rotation+scale", "keypoint_spread_voxels"}
    for r in (eq[m] for m in ("rotation", "scale", "rotation+scale")):
        assert len(r["per_keypoint_mean"]) == 32 and r["overall"]["n"] == 2 * 32
        assert r["overall"]["mean"] == pytest.approx(sum(r["per_keypoint_mean"]) / 32)
    # the compared KP-Net is the same weights, so the same seeded transforms give the same errors
    compared_eq = results["equivariance_compared"]
    for mode in ("rotation", "scale", "rotation+scale"):
        assert compared_eq[mode]["per_keypoint_mean"] == pytest.approx(eq[mode]["per_keypoint_mean"])

    figures = results["figures"]
    assert set(figures) == {"reconstructions", "interpolation", "interpolation_pose_average", "circle", "strip",
                            "equivariance", "sensor"}

    sensor = results["sensor"]
    assert sensor["psi_deg"] == pytest.approx([0, 90, 180, 270]) and len(sensor["pose_angle_deg"]) == 2
    assert set(sensor["models"]) == {"KP-Net", "KP-Net (compared)"}
    for kind in ("whole", "single"):
        ours, compared = (sensor["models"][m][kind] for m in ("KP-Net", "KP-Net (compared)"))
        assert len(ours["iou_per_psi"]) == 4
        assert ours["spread"] == pytest.approx(max(ours["iou_per_psi"]) - min(ours["iou_per_psi"]))
        # best and last of this one-epoch run are the same weights: the same clouds give the same numbers
        assert compared["iou_per_psi"] == pytest.approx(ours["iou_per_psi"])
    assert len(read_csv(out / "sensor_goal.csv")) == 4
    for name in figures.values():
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000

    assert len(read_csv(out / "representation_per_example.csv")) == 3
    rows = read_csv(out / "interpolation.csv")
    assert len(rows) == 3 and "KP-Net (Interp.)_iou" in rows[0]
    assert len(read_csv(out / "interpolation_pose_average.csv")) == 3
    assert len(read_csv(out / "circle.csv")) == 4
    assert len(read_csv(out / "equivariance_per_keypoint.csv")) == 32
    assert "| KP-Net (paper) | 0.012 (0.0144) | 0.97 (0.011) | 9.366 (0.929)" in (out / "table1.md").read_text()

    text = md.read_text()
    assert "Rotate-goal on sensor-like clouds" in text and "| KP-Net (compared) | single |" in text
    assert "tiny test models" in text and "only 4 pairs" in text
    assert "| CNN-Net (paper) | 0.006 (0.001) | 0.984 (0.003) | 9.244 (0.953)" in text
    assert "| KP-Net (compared) | " in text.split("## Representation power (Table I)")[1].split("##")[0]
    assert "**The paper's claim**" in text and "Over 2 random poses at psi = 30 deg" in text
    equivariance_section = text.split("## Equivariance error")[1].split("\n## ")[0]
    assert "### KP-Net (compared)" in equivariance_section and equivariance_section.count("| rotation |") == 2
    assert "kp-eval --kp " in text and "--samples 3" in text
    assert '"preset": "fast"' in text and '"decoder_channels": 32' in text  # the training config
    for name in figures.values():
        assert f"](../results/{name})" in text
    recipes_section = text.split("## Your own object in one command: time to quality")[1].split("## Checkpoints")[0]
    assert recipes_section.count("kp-train --recipe node --seed 3") == 2
    assert "| operating-point | 2 | 200 | 3.3 |" in recipes_section  # the stage's steps and minutes of step time
    assert "| operating-point | 2 | 200 | 6.7 |" in recipes_section  # the validation table, from the recipe's start
    for i in (1, 2):
        assert f"](../results/time_to_quality_{i}.png)" in recipes_section and (out / f"time_to_quality_{i}.png").is_file()


def test_the_papers_claim_is_read_at_45_degrees_against_the_spread_over_poses():
    from kp_training.protocols import paper_claim

    psi = [0.0, 40.0, 50.0, 80.0]
    interp = {"psi_deg": psi, "curves": {"KP-Net": {"iou": [0.9, 0.8, 0.7, 0.6]}, "CNN-Net": {"iou": [0.9, 0.5, 0.4, 0.3]}},
              "pose_average": {"psi_deg": [0.0, 45.0, 90.0], "poses": {"angle_deg": [1.0, 2.0, 3.0]},
                               "mean": {"KP-Net": {"iou": [0.9, 0.80, 0.9]}, "CNN-Net": {"iou": [0.9, 0.70, 0.9]}},
                               "std": {"KP-Net": {"iou": [0.0, 0.05, 0.0]}, "CNN-Net": {"iou": [0.0, 0.12, 0.0]}}}}
    claim = paper_claim(interp)
    assert claim["psi_deg"] == 40.0 and claim["base"] == pytest.approx({"kp": 0.8, "cnn": 0.5, "margin": 0.3})
    poses = claim["poses"]
    assert poses["count"] == 3 and poses["psi_deg"] == 45.0 and poses["margin"] == pytest.approx(0.1)
    assert not poses["holds"]  # 0.1 is within CNN-Net's spread over the poses (0.12)
    assert "compared" not in claim["base"] and "compared" not in poses
    interp["pose_average"]["std"]["CNN-Net"]["iou"][1] = 0.08
    assert paper_claim(interp)["poses"]["holds"]
    del interp["curves"]["CNN-Net"]
    assert paper_claim(interp) is None


def test_the_papers_claim_reads_the_compared_kpnet_at_the_same_angle():
    from kp_training.protocols import paper_claim
    from kp_training.report import claim_markdown

    psi = [0.0, 44.0, 47.0]
    curves = {"KP-Net": {"iou": [0.9, 0.7, 0.6]}, "CNN-Net": {"iou": [0.9, 0.4, 0.4]},
              "KP-Net (compared)": {"iou": [0.9, 0.88, 0.1]}}
    interp = {"psi_deg": psi, "curves": curves,
              "pose_average": {"psi_deg": [0.0, 46.0], "poses": {"angle_deg": [1.0, 2.0]},
                               "mean": {m: {"iou": [0.9, v]} for m, v in
                                        (("KP-Net", 0.7), ("CNN-Net", 0.4), ("KP-Net (compared)", 0.93))},
                               "std": {m: {"iou": [0.0, v]} for m, v in
                                       (("KP-Net", 0.05), ("CNN-Net", 0.06), ("KP-Net (compared)", 0.02))}}}
    claim = paper_claim(interp)
    assert claim["base"]["compared"] == 0.88  # psi 44 is nearer 45 than 47 is
    assert claim["poses"]["compared"] == 0.93 and claim["poses"]["compared_std"] == 0.02
    assert ("KP-Net (compared) at psi = 44 deg: 0.880 at the base pose, 0.930 (std 0.020) over the random poses."
            in claim_markdown(claim))


def test_only_cnn_without_figures(cnn_ckpt, tmp_path):
    out = tmp_path / "out"
    assert ev.main(["--cnn", str(cnn_ckpt), "--out", str(out), "--results-md", str(out / "R.md"), "--no-figures",
                    "--poses", "0"] + TINY_EVAL[:2] + ["--angles", "2", "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["representation"]["summary"]) == {"CNN-Net", "Ground truth (sampling floor)"}
    assert set(results["interpolation"]["curves"]) == {"CNN-Net"}
    assert "equivariance" not in results and "circle" not in results["interpolation"]
    assert "pose_average" not in results["interpolation"] and "figures" not in results
    assert not list(out.glob("*.png"))
    text = (out / "R.md").read_text()
    assert "KP-Net" not in text.split("## Checkpoints")[0].replace("KP-Net (Interp.)", "")


def test_the_papers_protocols_skip_a_model_not_trained_on_its_inputs(kp_run, cnn_ckpt, tmp_path):
    from kp_core.checkpoint import load_model
    from kp_core.placement import serving_metadata

    model, meta = load_model(kp_run)
    sensor = save_checkpoint(tmp_path / "sensor", model, {**meta, **serving_metadata("sensor", 1.3, 0.875)})
    out = tmp_path / "out"
    argv = ["--kp", str(sensor), "--cnn", str(cnn_ckpt), "--out", str(out), "--results-md", str(out / "R.md"),
            "--no-figures", "--poses", "0", "--sensor-poses", "1", "--sensor-psi-step", "180"] + TINY_EVAL[:4]
    assert ev.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["sensor"]["models"]) == {"KP-Net"}  # what it was trained for is still scored
    assert set(results["representation"]["summary"]) == {"CNN-Net", "Ground truth (sampling floor)"}
    assert set(results["interpolation"]["curves"]) == {"CNN-Net"}
    assert "equivariance" not in results and "circle" not in results["interpolation"]
    assert "sensor clouds placed by the node's rule (zoom 1.3)" in results["paper_protocols_skipped"]["KP-Net"]
    text = (out / "R.md").read_text()
    table1 = text.split("## Representation power (Table I)")[1].split("\n## ")[0]
    assert "**KP-Net**: trained on sensor clouds" in text and "CNN-Net" in table1 and "KP-Net" not in table1
    # Solid grids at another zoom do not fit the paper's protocols either.
    zoomed = save_checkpoint(tmp_path / "zoomed", model, {**meta, **serving_metadata("solid", 1.3, 0.875)})
    assert "at zoom 1.3" in ev.paper_protocols_skipped(load_model(zoomed)[1])
    assert ev.paper_protocols_skipped(meta) is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "x"], "at least one checkpoint"),
        (["--kp", "/nonexistent/run", "--out", "x"], "no such checkpoint"),
        (["--cnn", "/nonexistent/cnn.safetensors"], "no such checkpoint"),
        (["--kp", "K", "--samples", "0"], "--samples must be >= 1"),
        (["--kp", "K", "--poses", "-1"], "--poses must be >= 0"),
        (["--kp", "K", "--camera-views", "-2"], "--camera-views must be >= 0"),
        (["--kp", "K", "--scale-min", "0.9", "--scale-max", "0.8"], "scale-min"),
        (["--kp", "K", "--samples", "many"], "invalid int value"),
        (["--kp", "K", "--device", "cuda:7"] if not torch.cuda.is_available() else ["--kp", "K", "--device", "tpu"],
         "device"),
        (["--kp", "K", "--bogus"], "unrecognized arguments"),
        (["--kp", "K", "--recipe-run", "/nonexistent/recipe-run"], "/nonexistent/recipe-run/recipe.json"),
        (["--kp", "K", "--out", "/proc/kp-eval-cannot-write-here"], "kp-eval-cannot-write-here"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(argv, message, capsys, kp_run):
    argv = [str(kp_run) if a == "K" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        ev.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_checkpoint_of_the_wrong_kind_is_refused(cnn_ckpt, kp_run, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        ev.main(["--kp", str(cnn_ckpt), "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "expected a 'keypoint' model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ev.main(["--cnn", str(kp_run), "--out", str(tmp_path)])
    assert "expected a 'cnn' model" in capsys.readouterr().err


def test_corrupt_checkpoint_is_refused(cnn_ckpt, tmp_path, capsys):
    bad = tmp_path / "bad"
    save_checkpoint(bad, build_model(model_config("cnn", decoder_channels=32)), {})
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(SystemExit) as exit_info:
        ev.main(["--cnn", str(bad) + ".json", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "corrupt" in capsys.readouterr().err


def test_a_failure_during_the_run_is_not_a_usage_error(cnn_ckpt, tmp_path, monkeypatch):
    """Arguments and checkpoints are checked first (exit 2); what fails later raises with its traceback."""
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ev, "choose_shape", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ev.main(["--cnn", str(cnn_ckpt), "--out", str(tmp_path / "o"), *TINY_EVAL])


class CentroidOracle(nn.Module):
    """An exactly equivariant toy "KP-Net": the keypoint is the centroid of the occupied voxels, and decoding
    re-voxelizes the shape rotated so that its centroid points the way the keypoint does (unscaled shapes)."""

    kind = "keypoint"

    def __init__(self, points):
        super().__init__()
        self.points = points
        self.canonical = self._centroid(voxelize(points[None]))[0]

    @staticmethod
    def _centroid(voxels):
        centres = voxel_centers(voxels.shape[-1])
        return torch.stack([centres[torch.nonzero(grid > 0.5)].mean(0) for grid in voxels[:, 0]])

    def encode(self, voxels):
        return self._centroid(voxels)[:, None, :]

    def decode(self, keypoints):
        c, c0 = keypoints[:, 0], self.canonical
        angle = torch.atan2(c[:, 1], c[:, 0]) - torch.atan2(c0[1], c0[0])
        grids = voxelize(rotate_z_points(self.points.expand(len(c), -1, -1), angle))
        return (grids * 2 - 1) * 20  # confident logits


class Recorder(nn.Module):
    """A "CNN-Net" that records the latents it is asked to decode."""

    kind = "latent"

    def __init__(self):
        super().__init__()
        self.decoded = []

    def encode(self, voxels):
        return voxels.flatten(1)[:, :: 4096].float() + torch.arange(len(voxels))[:, None].float()

    def decode(self, latent):
        self.decoded.append(latent)
        return torch.zeros(len(latent), 1, 64, 64, 64)


def test_interpolation_conventions_with_an_equivariant_oracle(mug):
    points = mug.points
    oracle, recorder = CentroidOracle(points), Recorder()
    psi = torch.deg2rad(torch.tensor([0.0, 30.0, 60.0]))
    curves, _ = protocols.interpolation(oracle, recorder, points, math.pi, torch.ones(3), psi, batch=8,
                                 chamfer_points=200, seed=0)
    # R_z(psi) applied to the keypoints of the base view reconstructs the base rotated by psi (the sign
    # conventions of the rotation, the ground truth and the interpolation weights all agree)
    assert torch.all(curves["KP-Net"]["iou"] > 0.9), curves["KP-Net"]["iou"]
    assert torch.all(curves["KP-Net (Interp.)"]["iou"] > 0.9), curves["KP-Net (Interp.)"]["iou"]
    assert torch.all(curves["KP-Net"]["distance"] < 0.5)
    # the test discriminates: rotating the keypoints the wrong way does not match the ground truth
    base = protocols.make_views(points, torch.tensor([math.pi]), torch.ones(1, 3))
    target = protocols.make_views(points, torch.tensor([math.pi + psi[2]]), torch.ones(1, 3))
    wrong = oracle.decode(rotate_z_points(oracle.encode(base), -psi[2:]))
    assert protocols.voxel_iou(torch.sigmoid(wrong), target).item() < 0.8
    # CNN-Net: linear interpolation (1 - a) z_base + a z_goal, a = psi / 90 deg
    ends = protocols.make_views(points, torch.tensor([math.pi, 1.5 * math.pi]), torch.ones(2, 3))
    z = recorder.encode(ends)
    latent = torch.cat(recorder.decoded)
    a = torch.tensor([0.0, 1 / 3, 2 / 3])[:, None]
    assert torch.allclose(latent, (1 - a) * z[0] + a * z[1], atol=1e-5)


def test_equivariance_of_an_equivariant_oracle_is_small(mug):
    cfg = ev.EvalConfig(kp="unused", equivariance_samples=4, batch=4)
    result = protocols.equivariance(CentroidOracle(mug.points), mug.points, cfg)
    assert result["rotation"]["overall"]["max"] < 1.0  # voxels: only re-voxelization noise
    assert result["scale"]["overall"]["max"] < 1.0
    assert len(result["rotation"]["per_keypoint_mean"]) == 1


def test_the_shape_is_loaded_as_the_checkpoint_was_trained_on_it_in_metres():
    from pathlib import Path

    from kp_training.evaluate import EvalConfig

    jug = str(Path(__file__).resolve().parents[1] / "assets" / "jug.stl")
    meta = {"train_config": {"shape": jug, "up_axis": "y", "mesh_units": "mm"}}
    shape = ev.choose_shape(EvalConfig(kp="k"), {"KP-Net": (None, meta)})
    assert shape.normalization["units"] == "m" and 0.15 < shape.normalization["height"] < 0.19  # a 17 cm jug
    plain = ev.choose_shape(EvalConfig(kp="k"), {"KP-Net": (None, {"train_config": {"shape": jug, "up_axis": "y"}})})
    assert plain.normalization["units"] == "mesh"
