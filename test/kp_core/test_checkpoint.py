import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file

from kp_core.checkpoint import CheckpointError, load_model, read_metadata, save_checkpoint
from kp_core.models import build_model, model_config


@pytest.fixture()
def saved(tmp_path):
    model = build_model(model_config("fast", num_keypoints=6)).eval()
    save_checkpoint(tmp_path / "best", model, {"metrics": {"val": {"iou": 0.5}}, "normalization": {"center": [0, 0, 0]}})
    return model, tmp_path


def test_round_trip_gives_identical_outputs_from_every_path_form(saved):
    model, run = saved
    voxels = (torch.rand(2, 1, 64, 64, 64) > 0.8).float()
    with torch.no_grad():
        expected = model(voxels)
    for path in (run, run / "best.safetensors", run / "best.json", run / "best"):
        loaded, meta = load_model(path)
        assert not loaded.training
        with torch.no_grad():
            out = loaded(voxels)
        torch.testing.assert_close(out["latent"], expected["latent"])
        torch.testing.assert_close(out["logits"], expected["logits"])
    assert meta["num_keypoints"] == 6 and meta["metrics"]["val"]["iou"] == 0.5 and meta["grid_size"] == 64
    assert meta["architecture"]["encoder"] == "fast" and "code_version" in meta


def test_files_are_safetensors_and_json_not_pickles(saved):
    """The safetensors layout read by hand (8-byte little-endian header length, JSON header naming every
    tensor), then by the safetensors library: torch.save (a zip of pickles) or any pickle fails both."""
    model, run = saved
    data = (run / "best.safetensors").read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    loaded = load_file(run / "best.safetensors")
    for name, value in model.state_dict().items():
        assert torch.equal(loaded[name], value), name
    assert isinstance(json.loads((run / "best.json").read_text()), dict)


def test_files_get_the_umask_permissions_and_no_temporary_is_left(saved):
    _, run = saved
    umask = os.umask(0o022)
    try:
        save_checkpoint(run / "again", build_model(model_config("fast", num_keypoints=6)), {})
    finally:
        os.umask(umask)
    for name in ("again.safetensors", "again.json"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
    assert not list(run.glob(".*.tmp"))


def test_refuses_corrupt_weights(saved):
    _, run = saved
    data = bytearray((run / "best.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / "best.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(run)


def test_refuses_truncated_weights_without_a_digest(saved):
    _, run = saved
    meta = json.loads((run / "best.json").read_text())
    del meta["weights_sha256"]
    (run / "best.json").write_text(json.dumps(meta))
    (run / "best.safetensors").write_bytes((run / "best.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_model(run)


def test_refuses_mismatched_architecture(saved):
    _, run = saved
    meta = json.loads((run / "best.json").read_text())
    meta["architecture"]["num_keypoints"] = 7
    meta.pop("weights_sha256")
    (run / "best.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(run)


def test_refuses_missing_and_invalid_metadata(tmp_path, saved):
    _, run = saved
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nothing.safetensors")
    (run / "best.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_metadata(run)
    (run / "best.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="format version"):
        load_model(run)
