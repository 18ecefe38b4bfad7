"""`query_init = "spread"`: a new model's DETR queries start as different instances (reference boxes tiling the
frame, unit-variance vectors, no weight decay), the rest of the model starts as it would have, and a run with them
trains and exports them."""

import pytest
import torch

from samstream.model.loader import load_sam3_video
from samstream.model.queries import grid_boxes, is_spread_parameter
from samstream.train.config import Stage, TrainConfig
from samstream.train.setup import build_trainable, trainable_parameters
from samstream.train.trainer import parameter_groups, train, train_module


def test_grid_boxes_tile_the_frame_one_cell_each():
    boxes = grid_boxes(16)
    assert boxes.shape == (16, 4)
    assert len({(round(float(x), 4), round(float(y), 4)) for x, y in boxes[:, :2]}) == 16  # distinct centres
    assert torch.all(boxes[:, :2] - boxes[:, 2:] / 2 >= 0) and torch.all(boxes[:, :2] + boxes[:, 2:] / 2 <= 1)
    assert torch.allclose(boxes[:, 2:].prod(1).sum(), torch.tensor(1.0))  # 4x4 cells cover the frame once
    assert torch.allclose(grid_boxes(5)[:, 2], torch.full((5,), 1 / 3))  # the smallest square grid holding 5


def test_spread_queries_differ_where_sam3_s_start_as_copies_and_nothing_else_changes():
    plain = TrainConfig(model="tiny", tokenizer_scenes=20)
    spread = plain.model_copy(update={"query_init": "spread"})
    a, b = build_trainable(plain, torch.device("cpu")), build_trainable(spread, torch.device("cpu"))
    da, db = a.model.detector_model.detr_decoder, b.model.detector_model.detr_decoder
    count = db.reference_points.num_embeddings
    assert torch.allclose(db.reference_points.weight.sigmoid(), grid_boxes(count), atol=1e-4)
    assert torch.allclose(da.reference_points.weight.sigmoid(), torch.full((count, 4), 0.5), atol=0.05)  # all central
    assert db.query_embed.weight.std(0).mean() > 0.5 > 20 * da.query_embed.weight.std(0).mean()
    others = [(n, p) for n, p in a.model.named_parameters() if not is_spread_parameter(n)]
    spread_params = dict(b.model.named_parameters())
    assert all(torch.equal(p, spread_params[n]) for n, p in others)  # the same seed draws the same model
    assert sum(is_spread_parameter(n) for n, _ in b.model.named_parameters()) == 2


def test_spread_queries_take_no_weight_decay_and_need_a_new_model():
    config = TrainConfig(model="tiny", tokenizer_scenes=20, query_init="spread", weight_decay=0.1)
    trainable = build_trainable(config, torch.device("cpu"))
    params = trainable_parameters(train_module(config, trainable))
    decay, no_decay = parameter_groups(params, config)
    names = {id(p): n for n, p in params.items()}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sum(is_spread_parameter(n) for n in undecayed) == 2
    assert all(p.ndim < 2 or is_spread_parameter(names[id(p)]) for p in no_decay["params"])
    plain_decay, _ = parameter_groups(params, config.model_copy(update={"query_init": "sam3"}))
    assert len(plain_decay["params"]) == len(decay["params"]) + 2
    with pytest.raises(ValueError, match="query_init"):
        TrainConfig(model="builtin:small", query_init="spread")


def test_a_run_with_spread_queries_trains_and_exports_them(tmp_path):
    run = TrainConfig(model="tiny", tokenizer_scenes=20, query_init="spread", out=str(tmp_path / "run"),
                      batch_pairs=1, warmup_steps=1, checkpoint_every=2, validation_samples=4,
                      birth_calibration_videos=0, spatial_calibration_images=0, device="cpu", stages=[Stage(steps=2)])
    exported = load_sam3_video(str(train(run, progress=False))).detector_model.detr_decoder
    boxes = exported.reference_points.weight.float().sigmoid()
    assert torch.allclose(boxes, grid_boxes(len(boxes)), atol=0.02)  # two small steps from the grid
