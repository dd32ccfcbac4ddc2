import pytest
import torch

from kp_training.models import ENCODERS, PRESETS, build_model, model_config, register_encoder


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shapes_and_gradients_reach_every_layer(preset):
    model = build_model(model_config(preset, num_keypoints=8) if preset != "cnn" else model_config(preset))
    voxels = (torch.rand(1, 1, 64, 64, 64) > 0.8).float()
    out = model(voxels)
    assert out["logits"].shape == (1, 1, 64, 64, 64)
    if model.kind == "keypoint":
        assert out["latent"].shape == (1, 8, 3) and out["latent"].abs().max() <= 1
        assert out["heatmaps"].shape == (1, 8, 32, 32, 32)
        torch.testing.assert_close(model.encode(voxels), out["latent"])
    else:
        assert out["latent"].shape == (1, 128)
    torch.testing.assert_close(model.decode(out["latent"]), out["logits"])
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
