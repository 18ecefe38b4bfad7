import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from samstream.errors import ModelLoadError
from samstream.model.adapter_io import ADAPTERS_FILE, convert_checkpoint, load_adapters, save_adapters
from samstream.model.loader import load_segmenter, save_segmenter_model
from samstream.model.sam3i import Sam3IAdapters
from samstream.model.tiny import build_tiny_model


@pytest.fixture(scope="module")
def model_and_adapters():
    model, tokenizer = build_tiny_model()
    adapters = Sam3IAdapters.fresh(model.detector_model)
    with torch.no_grad():
        for p in adapters.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model, tokenizer, adapters


def _official_layout(adapters: Sam3IAdapters) -> dict[str, torch.Tensor]:
    """Our adapters renamed into the facebookresearch/sam3 layout SAM3-I checkpoints use, plus base weights."""
    out = {"detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight": torch.zeros(3, 3)}
    for key, value in adapters.state_dict().items():
        part, index, rest = key.split(".", 2)
        if part == "text":
            new = f"detector.backbone.language_backbone.encoder.transformer.resblocks.{index}.{rest}"
        elif part in ("encoder", "decoder"):
            new = f"detector.transformer.{part}.layers.{index}.{rest}"
        else:  # mask_embedder.adapter1.layers.0.weight: `index` is the route here
            new = f"detector.segmentation_head.mask_predictor_{index}.mask_embed.{rest}"
        out[new] = value.clone()
    return out


def test_save_and_load_round_trip(tmp_path, model_and_adapters):
    model, _, adapters = model_and_adapters
    save_adapters(adapters, tmp_path / "a.safetensors")
    loaded = load_adapters(model.detector_model, tmp_path / "a.safetensors")
    for key, value in adapters.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_model_folder_with_adapters_loads_them(tmp_path, model_and_adapters):
    model, tokenizer, adapters = model_and_adapters
    save_segmenter_model(model, tokenizer, tmp_path / "m", adapters=adapters)
    segmenter = load_segmenter(str(tmp_path / "m"), device="cpu")
    assert segmenter.info.adapters.endswith(ADAPTERS_FILE)
    state = segmenter.sam3i.adapters.state_dict()
    assert all(torch.equal(state[k], v) for k, v in adapters.state_dict().items())


def test_bad_adapter_files_name_the_problem(tmp_path, model_and_adapters):
    model, _, adapters = model_and_adapters
    with pytest.raises(ModelLoadError, match="no such adapter file"):
        load_adapters(model.detector_model, tmp_path / "missing.safetensors")
    good = tmp_path / "good.safetensors"
    save_adapters(adapters, good)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ModelLoadError, match="cut.safetensors: not a readable safetensors file"):
        load_adapters(model.detector_model, truncated)
    state = {k: v.clone() for k, v in adapters.state_dict().items()}
    state["text.0.adapter1.down_proj.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ModelLoadError, match=r"key 'text.0.adapter1.down_proj.weight' has shape \(3, 3\)"):
        load_adapters(model.detector_model, tmp_path / "shape.safetensors")
    del state["text.0.adapter1.down_proj.weight"]
    save_file(state, str(tmp_path / "missing-key.safetensors"))
    with pytest.raises(ModelLoadError, match=r"missing keys \[text.0.adapter1.down_proj.weight\]"):
        load_adapters(model.detector_model, tmp_path / "missing-key.safetensors")


def test_convert_official_checkpoint(tmp_path, model_and_adapters):
    model, _, adapters = model_and_adapters
    torch.save({"model": _official_layout(adapters)}, tmp_path / "sam3i.pt")
    count = convert_checkpoint(tmp_path / "sam3i.pt", tmp_path / "ours.safetensors", model.detector_model)
    assert count == len(adapters.state_dict())
    loaded = load_adapters(model.detector_model, tmp_path / "ours.safetensors")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in adapters.state_dict().items())


def test_convert_refuses_unmatched_keys_and_writes_nothing(tmp_path, model_and_adapters):
    model, _, adapters = model_and_adapters
    state = _official_layout(adapters)
    state["detector.transformer.encoder.weird_adapter.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(ModelLoadError, match=r"1 adapter keys match no known layout: \[detector.transformer.encoder.weird_adapter.weight\]"):
        convert_checkpoint(tmp_path / "odd.pt", tmp_path / "out.safetensors", model.detector_model)
    missing = {k: v for k, v in _official_layout(adapters).items() if ".resblocks.1." not in k}
    torch.save(missing, tmp_path / "partial.pt")
    with pytest.raises(ModelLoadError, match="missing keys"):
        convert_checkpoint(tmp_path / "partial.pt", tmp_path / "out.safetensors", model.detector_model)
    assert not (tmp_path / "out.safetensors").exists()


def test_convert_checkpoint_cli(tmp_path, model_and_adapters):
    _, _, adapters = model_and_adapters
    torch.save(_official_layout(adapters), tmp_path / "sam3i.pt")
    done = subprocess.run([sys.executable, "-m", "samstream.cli", "convert-checkpoint", tmp_path / "sam3i.pt",
                           tmp_path / "out.safetensors", "--model", "builtin:tiny-random"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "adapter tensors written" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "samstream.cli", "convert-checkpoint", tmp_path / "nope.pt",
                          tmp_path / "x.safetensors"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "nope.pt: no such checkpoint" in bad.stderr
