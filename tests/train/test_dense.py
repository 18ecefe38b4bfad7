"""The dense auxiliary loss: per-patch shape / colour / texture labels from the world's renders, the training-only
heads, and a training run that uses them and exports a model without them."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from samstream.data.world import SHAPES, make_scene
from samstream.errors import ConfigError
from samstream.train.config import Stage, TrainConfig, load_config
from samstream.train.dense import WORLD_DENSE_CLASSES, DenseHeads, label_maps
from samstream.train.trainer import export_latest, train
from samstream.train.world_batches import WorldBatches


def frame_with_objects(size=64, min_objects=3):
    batches = WorldBatches(size, size // 2, seed=5)
    for seed in range(100):
        rgb, visible, objects, _ = batches._frame(make_scene(seed, 2, min_objects, 6), 0)
        if len(objects) >= min_objects:
            return visible, objects
    raise AssertionError("no scene with enough visible objects")


def test_label_maps_name_what_is_drawn_under_each_pixel():
    visible, objects = frame_with_objects()
    maps = label_maps(objects, visible, 32)
    assert set(maps) == set(WORLD_DENSE_CLASSES)
    for kind, names in WORLD_DENSE_CLASSES.items():
        assert maps[kind].shape == (1 + len(names), 32, 32)
        assert np.allclose(maps[kind].sum(0), 1.0, atol=1e-5)  # shares of every cell, background included
    for view in objects:
        inside = label_maps([view], visible, 32)["category"][0] < 0.5  # cells mostly covered by this object
        shape = maps["category"][1 + SHAPES.index(view.category)]
        colour = maps["colour"][1 + WORLD_DENSE_CLASSES["colour"].index(view.attributes["colour"])]
        assert inside.any() and shape[inside].mean() > 0.5 and colour[inside].mean() > 0.5
    assert maps["category"][0].mean() > 0.2  # the background is named too


def test_dense_heads_loss_is_low_for_the_right_classes_and_chance_for_none():
    visible, objects = frame_with_objects()
    labels = {k: torch.from_numpy(v)[None] for k, v in label_maps(objects, visible, 32).items()}
    heads = DenseHeads(8)
    for head in heads.heads.values():
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    uniform = heads.loss(torch.zeros(1, 8, 16, 16), labels).detach()
    chance = np.mean([math.log(1 + len(names)) for names in WORLD_DENSE_CLASSES.values()])
    assert float(uniform) == pytest.approx(chance, rel=1e-5)
    optimizer = torch.optim.Adam(heads.parameters(), lr=0.1)
    features = torch.cat([torch.nn.functional.adaptive_avg_pool2d(labels[k], (16, 16)) for k in labels], 1)[:, :8]
    for _ in range(100):  # features that carry the category shares (and some colour): the heads learn to read them
        loss = heads.loss(features, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.8 * float(uniform)


def test_batches_carry_dense_labels_only_when_asked():
    plain = WorldBatches(64, 32, seed=2).sample(2)
    assert plain.dense_labels is None
    batch = WorldBatches(64, 32, seed=2, dense_labels=True).sample(2)
    assert batch.dense_labels["category"].shape == (4, 1 + len(SHAPES), 32, 32)
    objects = batch.dense_labels["category"][:, 1:].sum(1)  # object cells, in the same row order as the pixels
    assert all(float(objects[i].sum()) > 0 for i in range(4) if batch.targets[i].masks.numel() or
               (batch.targets[i].others_masks is not None and len(batch.targets[i].others_masks)))


def test_training_with_the_dense_loss_exports_sam3_without_the_heads(tmp_path):
    stages = [Stage(name="detect", steps=2, train_tracker=False),
              Stage(name="track", steps=1, freeze=["detector_model", "adapters"], train_tracker=True)]
    run = TrainConfig(model="tiny", tokenizer_scenes=30, out=str(tmp_path / "run"), batch_pairs=1, warmup_steps=1,
                      log_every=1, checkpoint_every=1, validation_samples=0, birth_calibration_videos=0, device="cpu",
                      stages=stages, loss_weights={"dense": 1.0})
    folder = train(run, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run/train_log.jsonl").read_text().splitlines()]
    assert all(r["dense"] > 0 for r in log[:2]) and "dense" not in log[2]
    assert "dice" not in log[2]  # the heads do not make the tracker stage decode the detector
    stored = load_file(tmp_path / "run/checkpoints/step-0000002/trainable.safetensors")
    assert any(k.startswith("dense_heads.") for k in stored)  # resumable
    exported = load_file(folder / "model.safetensors")
    assert not any("dense" in k for k in exported)
    assert export_latest(run, progress=False) == folder  # a checkpoint with heads exports as well


def test_the_dense_loss_needs_world_data(tmp_path):
    toml = tmp_path / "coco.toml"
    toml.write_text('data = "some/images.json"\n[loss_weights]\ndense = 1.0\n')
    with pytest.raises(ConfigError, match="dense.*world"):
        load_config(toml)
