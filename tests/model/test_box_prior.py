"""The mask head's box prior (samstream/model/box_prior.py): identity when fresh, able to learn a box-shaped term,
and read by each copy of the model from its own weights. Training and loading it: test_extension_training.py."""

from __future__ import annotations

import copy

import torch

from samstream.model.box_prior import BoxMaskPrior
from tests.model.extended_models import detect, tiny_model_with


def test_a_fresh_prior_changes_nothing_and_leaves_the_other_weights_as_without_it():
    plain, boxed = tiny_model_with(), tiny_model_with(box_prior=8)
    assert not hasattr(plain.detector_model.mask_decoder, "box_prior")
    plain_state = plain.state_dict()
    assert all(torch.equal(v, plain_state[k]) for k, v in boxed.state_dict().items() if "box_prior" not in k)
    assert torch.equal(detect(plain).pred_masks, detect(boxed).pred_masks)


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
    model = tiny_model_with(box_prior=8)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.detector_model.mask_decoder.box_prior.columns[-1].bias.fill_(2.0)
    assert torch.allclose(detect(clone).pred_masks, detect(model).pred_masks + 2.0)  # f_x: 2 everywhere, f_y: 0

