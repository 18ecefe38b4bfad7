"""samstream's own model parts through `samstream train` and back: a step moves the part, the exported folder loads
it with its trained tensors, and a folder whose weights lack them fails naming the part."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from samstream.errors import ModelLoadError
from samstream.model.loader import load_segmenter
from samstream.train.config import Stage, TrainConfig
from samstream.train.trainer import train

PARTS = {  # label: (model size, the part's module path, a parameter that moves on the first step)
    "box prior": ("tiny-box", "detector_model.mask_decoder.box_prior", "columns"),
    "rank scorer": ("tiny-rank", "detector_model.dot_product_scoring.rank_scorer", "read_instruction"),
}


@pytest.mark.parametrize("label", list(PARTS))
def test_training_moves_the_part_and_the_exported_folder_loads_it(tmp_path, label):
    size, path, moving = PARTS[label]
    prefix = path + "."
    stages = [Stage(name="detect", steps=2, train_tracker=False)]
    run = TrainConfig(model=size, tokenizer_scenes=30, out=str(tmp_path / "run"), batch_pairs=1,
                      warmup_steps=1, checkpoint_every=1, validation_samples=0, birth_calibration_videos=0,
                      device="cpu", stages=stages)
    folder = train(run, progress=False)
    first = load_file(tmp_path / "run/checkpoints/step-0000001/trainable.safetensors")
    assert any(k.startswith("model." + prefix + moving) and float(v.abs().max()) > 0 for k, v in first.items())
    exported = load_file(folder / "model.safetensors")
    part = load_segmenter(str(folder), device="cpu").model.get_submodule(path)
    assert all(torch.equal(v.float(), exported[prefix + k].float()) for k, v in part.state_dict().items())

    save_file({k: v for k, v in exported.items() if not k.startswith(prefix)}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=label):
        load_segmenter(str(folder), device="cpu")
