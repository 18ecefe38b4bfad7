"""The `instances` loss through the heads only: the free queries' boxes and masks again from detached query
states, so the frame's other objects train the mask embedders and box head but not what the scores read."""

import torch

from samstream.model.sam3i import Sam3IAdapters
from samstream.model.tiny import build_tiny_model
from samstream.train.forward import TrainModule
from samstream.train.losses import LossWeights
from samstream.train.world_batches import WorldBatches


def _instance_loss_grads(heads_only: bool):
    torch.manual_seed(0)
    model, tokenizer = build_tiny_model()
    adapters = Sam3IAdapters.fresh(model.detector_model)
    weights = LossWeights(instances=1.0, instances_heads_only=heads_only)
    module = TrainModule(model, adapters, tokenizer, weights, train_tracker=False).eval()
    batch = WorldBatches(112, 32, seed=3, instructions_per_frame=2).sample(3)
    batch.levels[:] = ["concept", "simple", "complex"] * (len(batch.levels) // 3) + ["simple"] * (len(batch.levels) % 3)
    assert sum(len(t.others_masks) for t in batch.targets) > 0  # the frames have objects the instruction leaves out
    losses = module(batch)
    losses["instances"].backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    return losses, grads


def _touched(grads, prefix: str) -> bool:
    return any(g is not None and g.abs().sum() > 0 for name, g in grads.items() if name.startswith(prefix))


def test_heads_only_gives_the_same_loss_but_trains_only_the_heads():
    full, full_grads = _instance_loss_grads(heads_only=False)
    heads, head_grads = _instance_loss_grads(heads_only=True)
    # the same predictions through another gradient path: every loss term has the same value
    for key in ("instances", "cls", "dice", "giou"):
        assert torch.allclose(full[key], heads[key], rtol=1e-4, atol=1e-5), key
    assert heads["instances"] > 0
    detector = "model.detector_model."
    for head in ("mask_decoder.mask_embedder", "mask_decoder.instance_projection", "detr_decoder.box_head"):
        assert _touched(head_grads, detector + head), head
    assert _touched(head_grads, "adapters.mask_embedder.adapter1") and _touched(head_grads, "adapters.mask_embedder.adapter2")
    # what the scores read: the decoder's layers, the fusion encoder, the backbone, the text, the adapters feeding them
    for body in (detector + "detr_decoder.layers", detector + "detr_encoder", detector + "vision_encoder",
                 detector + "mask_decoder.pixel_decoder", "adapters.decoder", "adapters.text"):
        assert _touched(full_grads, body), body  # the full loss reaches it ...
        assert not _touched(head_grads, body), body  # ... the heads-only loss does not
    assert not _touched(head_grads, detector + "dot_product_scoring")
