"""The mask head's box prior (samstream/model/box_prior.py): identity when fresh, able to learn a box-shaped term,
trained by `samstream train`, and saved and loaded with the model."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Sam3VideoModel

from samstream.errors import ModelLoadError
from samstream.model.box_prior import BoxMaskPrior
from samstream.model.extensions import install_extensions
from samstream.model.loader import load_segmenter
from samstream.model.tiny import tiny_video_config
from samstream.train.config import Stage, TrainConfig
from samstream.train.trainer import train

PRIOR = "detector_model.mask_decoder.box_prior."


def _model(box_prior: int | None) -> Sam3VideoModel:
    torch.manual_seed(3)
    model = Sam3VideoModel(tiny_video_config(conv_stem=(16,), box_prior=box_prior))
    install_extensions(model)
    return model.eval()


def _detect(model: Sam3VideoModel):
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        return model.detector_model(pixel_values=torch.rand(2, 3, 112, 112, generator=generator),
                                    input_ids=torch.randint(0, 250, (2, 32), generator=generator),
                                    attention_mask=torch.ones(2, 32, dtype=torch.long))


def test_a_fresh_prior_changes_nothing_and_leaves_the_other_weights_as_without_it():
    plain, boxed = _model(None), _model(8)
    assert not hasattr(plain.detector_model.mask_decoder, "box_prior")
    plain_state = plain.state_dict()
    assert all(torch.equal(v, plain_state[k]) for k, v in boxed.state_dict().items() if "box_prior" not in k)
    assert torch.equal(_detect(plain).pred_masks, _detect(boxed).pred_masks)


def test_the_prior_learns_to_keep_a_mask_inside_its_box():
    torch.manual_seed(0)
    prior = BoxMaskPrior(16)
    optimizer = torch.optim.Adam(prior.parameters(), lr=0.03)
    cells = (torch.arange(32) + 0.5) / 32
    for _ in range(300):
        low = torch.rand(8, 4, 2) * 0.6
        boxes = torch.cat([low, low + 0.1 + torch.rand(8, 4, 2) * 0.3], dim=-1)  # xyxy
        inside_x = (cells >= boxes[..., 0, None]) & (cells <= boxes[..., 2, None])
        inside_y = (cells >= boxes[..., 1, None]) & (cells <= boxes[..., 3, None])
        target = (inside_y[..., :, None] & inside_x[..., None, :]).float()
        logits = prior(torch.zeros(8, 4, 32, 32), boxes)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predicted = logits.detach() > 0
    iou = (predicted & target.bool()).sum() / (predicted | target.bool()).sum()
    assert iou > 0.85


def test_a_deep_copy_reads_its_own_prior():
    model = _model(8)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.detector_model.mask_decoder.box_prior.columns[-1].bias.fill_(2.0)
    assert torch.allclose(_detect(clone).pred_masks, _detect(model).pred_masks + 2.0)  # f_x: 2 everywhere, f_y: 0


def test_training_moves_the_prior_and_the_exported_folder_loads_it(tmp_path):
    stages = [Stage(name="detect", steps=2, train_tracker=False)]
    run = TrainConfig(model="tiny-box", tokenizer_scenes=30, out=str(tmp_path / "run"), batch_pairs=1,
                      warmup_steps=1, checkpoint_every=1, validation_samples=0, birth_calibration_videos=0,
                      device="cpu", stages=stages)
    folder = train(run, progress=False)
    first = load_file(tmp_path / "run/checkpoints/step-0000001/trainable.safetensors")
    assert any(k.startswith("model." + PRIOR) and float(v.abs().max()) > 0 for k, v in first.items())
    exported = load_file(folder / "model.safetensors")
    segmenter = load_segmenter(str(folder), device="cpu")
    prior = segmenter.model.detector_model.mask_decoder.box_prior
    assert all(torch.equal(v.float(), exported[PRIOR + k].float()) for k, v in prior.state_dict().items())

    save_file({k: v for k, v in exported.items() if not k.startswith(PRIOR)}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="box prior"):
        load_segmenter(str(folder), device="cpu")
