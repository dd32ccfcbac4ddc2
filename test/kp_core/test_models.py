import math

import pytest
import torch

from kp_core.geometry import rotate_z_points
from kp_core.encoders import ENCODERS, register_encoder
from kp_core.models import PRESETS, KeypointNetPreset, build_model, fit_yaw_template, model_config


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shapes_and_gradients_reach_every_layer(preset):
    keypoints = isinstance(PRESETS[preset], KeypointNetPreset)
    model = build_model(model_config(preset, num_keypoints=8) if keypoints else model_config(preset))
    voxels = (torch.rand(1, 1, 64, 64, 64) > 0.8).float()
    out = model(voxels)
    assert out["logits"].shape == (1, 1, 64, 64, 64)
    if model.kind == "keypoint":
        assert out["latent"].shape == (1, 8, 3)
        assert out["heatmaps"].shape[:2] == (1, 8) and out["heatmaps"][0, 0].numel() == len(model.encoder.heatmap_centers)
    else:
        assert out["latent"].shape == (1, 128)
    (out["logits"].mean() + out["latent"].sum()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_paper_preset_matches_the_reference_sizes():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert abs(count(build_model(model_config("paper"))) - 9.7e6) < 0.1e6
    assert abs(count(build_model(model_config("cnn"))) - 11.2e6) < 0.1e6


def test_batches_are_independent():
    model = build_model(model_config("fast", num_keypoints=4)).eval()
    voxels = (torch.rand(3, 1, 64, 64, 64) > 0.8).float()
    with torch.no_grad():
        batched = model.encode(voxels)
        single = torch.cat([model.encode(v[None]) for v in voxels])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_registry_adds_encoders_by_name_and_rejects_bad_configs():
    @register_encoder("test-tiny")
    class Tiny(torch.nn.Module):
        def __init__(self, num_keypoints):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, num_keypoints, 2, stride=2)

        def forward(self, x):
            return self.conv(x)

    try:
        model = build_model({"model": "keypoint", "encoder": "test-tiny", "num_keypoints": 3, "decoder_channels": 32})
        assert model.encode(torch.zeros(2, 1, 64, 64, 64)).shape == (2, 3, 3)
        with pytest.raises(ValueError, match="already registered"):
            register_encoder("test-tiny")(Tiny)
    finally:
        ENCODERS.pop("test-tiny")
    with pytest.raises(ValueError, match="unknown encoder"):
        build_model({"model": "keypoint", "encoder": "nope"})
    with pytest.raises(ValueError, match="unknown preset"):
        model_config("nope")
    with pytest.raises(ValueError, match="invalid architecture"):
        build_model({"model": "cnn", "colour": "red"})
    with pytest.raises(ValueError, match="64"):
        build_model(dict(model_config("fast"), grid_size=32))


def spread_out_cylinder_model(seed: int = 0):
    """An untrained cylinder KP-Net whose keypoints are not collapsed onto the axis: sharper heads."""
    torch.manual_seed(seed)
    model = build_model(model_config("cylinder", num_keypoints=8)).eval()
    with torch.no_grad():
        for head in (model.encoder.coarse_head, model.encoder.fine_head):
            head.weight.mul_(20.0)
    return model


def keypoint_error_voxels(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm(dim=-1).max()) * 32  # grid units -> 64^3 voxels


def test_cylinder_encoder_is_equivariant_to_z_rotations_by_construction(mug):
    model = spread_out_cylinder_model()
    points = mug.points[None, ::3] * 0.8
    with torch.no_grad():
        base = model.encode(model.input_from_points(points))
        spread = keypoint_error_voxels(base, base.mean(1, keepdim=True))
        assert spread > 3.0, f"keypoints collapsed (spread {spread:.2f} voxels): the test would prove nothing"
        stride = 2 * math.pi / 32  # the theta stride of the deepest layer
        for m in (1, 5, 16, 29):
            turned = model.encode(model.input_from_points(rotate_z_points(points, m * stride)))
            assert keypoint_error_voxels(turned, rotate_z_points(base, m * stride)) < 1e-3
        # Between multiples the structure does not hold exactly: this untrained network is off by about
        # 0.5-0.9 voxel on average (measured); the consistency loss trains the rest.
        for degrees in (7.0, 30.0, 100.0):
            angle = math.radians(degrees)
            turned = model.encode(model.input_from_points(rotate_z_points(points, angle)))
            mean_error = float((turned - rotate_z_points(base, angle)).norm(dim=-1).mean()) * 32
            assert mean_error < 1.5


def test_cylinder_encoder_turns_a_shifted_input_exactly_and_reads_cartesian_grids(mug):
    model = spread_out_cylinder_model(1)
    grid = model.input_from_points(mug.points[None, ::3] * 0.8)
    with torch.no_grad():
        base = model.encode(grid)
        shifted = model.encode(torch.roll(grid, 12, dims=3))  # 12 of 128 theta cells: 3 deepest-layer cells
    assert keypoint_error_voxels(shifted, rotate_z_points(base, 12 * 2 * math.pi / 128)) < 1e-3
    from kp_core.voxelize import voxelize

    with torch.no_grad():  # a 64^3 Cartesian grid is resampled onto the cylinder: nearly the same keypoints
        cartesian = model.encode(voxelize(mug.points[None, ::3] * 0.8))
    assert float((cartesian - base).norm(dim=-1).mean()) * 32 < 1.0


def test_keypoints_stay_float32_under_bf16_autocast():
    """bf16 keypoints would be rounded by up to 1/16 voxel before the consistency loss sees them."""
    model = build_model(model_config("fast", num_keypoints=4, decoder_channels=32, encoder_options={"width": 8}))
    voxels = (torch.rand(1, 1, 64, 64, 64) > 0.8).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(voxels)
    assert out["latent"].dtype == torch.float32
    with torch.no_grad():
        reference = model.encode(voxels)
    torch.testing.assert_close(out["latent"].detach(), reference, atol=0.02, rtol=0)  # bf16 heatmaps, float32 expectation


def canonical_model(num_keypoints: int = 6):
    torch.manual_seed(0)
    return build_model(model_config("fast", num_keypoints=num_keypoints, decoder_channels=32,
                                    encoder_options={"width": 8}, canonical_yaw=True)).eval()


def test_canonical_yaw_template_is_fitted_from_views_at_known_yaws():
    model = canonical_model()
    layout = torch.rand(6, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    angle = torch.tensor([0.0, 1.0, -2.0, 3.0])
    views = rotate_z_points(layout.expand(4, -1, -1), angle) + torch.tensor([0.1, -0.2, 0.0])
    template = fit_yaw_template(model, views, angle)
    torch.testing.assert_close(template, layout[:, :2] - layout[:, :2].mean(0), atol=1e-6, rtol=0)
    assert torch.equal(model.yaw_template, template)
    with pytest.raises(ValueError, match="canonical_yaw"):
        fit_yaw_template(build_model(model_config("fast", num_keypoints=6)), views, angle)


def test_canonical_yaw_decoder_is_equivariant_by_construction():
    model = canonical_model()
    keypoints = torch.rand(2, 6, 3, generator=torch.Generator().manual_seed(2)) - 0.5
    plain = model.decode(keypoints)  # zero template: the decoder as it is
    assert torch.equal(plain, model.decoder(keypoints))
    fit_yaw_template(model, keypoints[:1], torch.zeros(1))
    with torch.no_grad():
        base = model.decode(keypoints)
        for quarter in (1, 2, 3):
            turned = model.decode(rotate_z_points(keypoints, quarter * math.pi / 2))
            torch.testing.assert_close(turned, torch.rot90(base, quarter, dims=(2, 3)), atol=1e-5, rtol=0)
        # Any angle: the canonical grid is turned once, so the goal at 0.3 rad equals the one at 0 turned by 0.3.
        from kp_core.geometry import rotate_grid_z, yaw_to_template

        yaw = yaw_to_template(keypoints, model.yaw_template)
        canonical = model.decoder(rotate_z_points(keypoints, -yaw))
        turned = model.decode(rotate_z_points(keypoints, 0.3))
        torch.testing.assert_close(turned, rotate_grid_z(canonical, yaw + 0.3), atol=1e-5, rtol=0)
    assert not torch.allclose(base, plain)  # the template changed what the decoder sees


def test_canonical_yaw_decoder_trains_and_keeps_its_template_in_checkpoints(tmp_path):
    from kp_core.checkpoint import load_model, save_checkpoint

    model = canonical_model().train()
    keypoints = torch.rand(2, 6, 3, generator=torch.Generator().manual_seed(3)) - 0.5
    fit_yaw_template(model, keypoints[:1], torch.zeros(1))
    model.decode(keypoints.requires_grad_()).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    assert keypoints.grad.abs().sum() > 0
    save_checkpoint(tmp_path / "m", model, {})
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.arch["canonical_yaw"] is True
    assert torch.equal(loaded.yaw_template, model.yaw_template)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_saved_model_has_the_architecture_of_one_built_from_its_preset(tmp_path, preset):
    """A run that starts from another's weights (a recipe's next stage) compares the two architectures: the JSON
    round trip must not tell them apart (the CNN-Net's encoder widths are a tuple in the preset, a list in JSON)."""
    from kp_core.checkpoint import load_model, save_checkpoint

    small = dict(decoder_channels=16) | (dict(num_keypoints=4) if isinstance(PRESETS[preset], KeypointNetPreset)
                                        else dict(latent_dim=8, encoder_channels=(2, 2, 2, 2)))
    model = build_model(model_config(preset, **small))
    save_checkpoint(tmp_path / "m", model, {})
    assert load_model(tmp_path / "m")[0].arch == build_model(model_config(preset, **small)).arch


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_model_that_reads_the_occupancy_grid_takes_the_voxelized_points_as_its_input(preset):
    from kp_core.voxelize import voxelize

    small = dict(decoder_channels=16) | (dict(num_keypoints=4) if isinstance(PRESETS[preset], KeypointNetPreset)
                                        else dict(latent_dim=8, encoder_channels=(2, 2, 2, 2)))
    model = build_model(model_config(preset, **small))
    points = torch.rand(2, 500, 3, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    grid = voxelize(points, 64)
    to_input = model.input_from_points(points)
    assert model.reads_occupancy_grid == (to_input.shape == grid.shape and torch.equal(to_input, grid))
    assert model.reads_occupancy_grid == (preset != "cylinder")
