"""The backbone stage ("objects"): world frames and mosaics with one label per visible object, mask-pooled heads, a
training run with a conv-stem model that starts with it, exports without the heads and loads back with its stem."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from samstream.data.world import SHAPES
from samstream.errors import ConfigError, ModelLoadError
from samstream.model.conv_stem import ConvStem
from samstream.model.loader import load_segmenter
from samstream.model.sam3i import Sam3IAdapters
from samstream.model.tiny import build_tiny_model
from samstream.train.config import Stage, TrainConfig, load_config
from samstream.train.dense import WORLD_DENSE_CLASSES, ObjectHeads, object_accuracy
from samstream.train.forward import TrainModule
from samstream.train.object_batches import ObjectBatches
from samstream.train.trainer import train


@pytest.mark.parametrize("mosaic_rate", [0.0, 1.0])
def test_object_batches_pool_each_object_over_its_own_cells(mosaic_rate):
    batch = ObjectBatches(64, 8, seed=3, mosaic_rate=mosaic_rate).sample(2)
    assert batch.pixels.shape == (4, 3, 64, 64) and batch.pixels.min() >= -1 and batch.pixels.max() <= 1
    count = len(batch.frames)
    assert batch.weights.shape == (count, 64) and torch.allclose(batch.weights.sum(1), torch.ones(count))
    assert set(batch.frames.tolist()) == {0, 1, 2, 3}  # every image has objects
    for kind, names in WORLD_DENSE_CLASSES.items():
        assert batch.labels[kind].shape == (count,) and 0 <= int(batch.labels[kind].min())
        assert int(batch.labels[kind].max()) < len(names)
    if mosaic_rate == 1.0:
        assert count == 4 * 16  # one object per cell of a 4x4 mosaic
        cells = batch.weights.reshape(count, 4, 2, 4, 2).sum((2, 4))  # each object's weight per mosaic cell
        assert (cells.flatten(1).argmax(1).reshape(4, 16) == torch.arange(16)).all()  # ...mostly in its own cell
        # a cell's colour is its object's: the mean pixel over the object's cells differs between cells
        assert len(set(batch.labels["category"].tolist())) > 1


def test_object_accuracy_counts_what_the_heads_name_right():
    model, tokenizer = build_tiny_model()
    module = TrainModule(model, Sam3IAdapters.fresh(model.detector_model), tokenizer, object_classes=WORLD_DENSE_CLASSES)
    for head in module.object_heads.heads.values():  # heads that name class 1 whatever they see
        torch.nn.init.zeros_(head.weight)
        head.bias.data = (torch.arange(len(head.bias)) == 1).float()
    module.train()
    result = object_accuracy(module, ObjectBatches(112, 8, seed=4, mosaic_rate=0.0), count=2, pairs=2)
    same = ObjectBatches(112, 8, seed=4, mosaic_rate=0.0)  # the same seed draws the same objects
    labels = [same.sample(2).labels for _ in range(2)]
    assert result["objects"] == sum(len(batch["category"]) for batch in labels)
    for kind in WORLD_DENSE_CLASSES:
        expected = float(torch.cat([batch[kind] for batch in labels]).eq(1).float().mean())
        assert result[kind] == pytest.approx(expected, abs=1e-4)
    assert module.training  # left as it was


def test_object_heads_learn_labels_that_the_features_carry():
    features = torch.zeros(2, 6, 4, 4)
    weights = torch.zeros(6, 16)
    labels = torch.arange(6)
    for o in range(6):  # object o sits in cell o of image o % 2, whose feature channel o is on
        weights[o, o] = 1.0
        features[o % 2, o, o // 4, o % 4] = 1.0
    heads = ObjectHeads(6, {"category": SHAPES})
    optimizer = torch.optim.Adam(heads.parameters(), lr=0.1)
    first = None
    for _ in range(60):
        losses = heads.loss(features, weights, torch.arange(6) % 2, {"category": labels})
        first = first if first is not None else float(losses["loss"].detach())
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert float(losses["objects_category"].detach()) < 0.1 * first
    pooled = heads.pool(features, weights, torch.arange(6) % 2)
    assert (heads.logits(pooled)["category"].argmax(1) == labels).all()


def test_an_objects_stage_trains_the_backbone_alone_then_detection_exports_a_stem_model(tmp_path):
    stages = [Stage(name="backbone", task="objects", steps=2),
              Stage(name="detect", steps=1, train_tracker=False)]
    run = TrainConfig(model="tiny-stem", tokenizer_scenes=30, out=str(tmp_path / "run"), batch_pairs=1,
                      warmup_steps=1, log_every=1, checkpoint_every=1, validation_samples=4,
                      birth_calibration_videos=0, spatial_calibration_images=0, device="cpu", stages=stages)
    folder = train(run, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run/train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["backbone", "backbone", "backbone", "detect"]
    assert all(r["objects_category"] > 0 and "dice" not in r for r in log[:2])
    heldout = log[2]["heldout_objects"]  # after the stage: what the heads name on held-out whole frames
    assert log[2]["step"] == 2 and heldout["objects"] > 0
    assert all(0.0 <= heldout[kind] <= 1.0 for kind in WORLD_DENSE_CLASSES)
    assert "objects_category" not in log[3] and log[3]["dice"] > 0
    before = load_file(tmp_path / "run/checkpoints/step-0000001/trainable.safetensors")
    after = load_file(tmp_path / "run/checkpoints/step-0000002/trainable.safetensors")
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("object_heads.") for k in moved)
    assert any(".patch_embeddings.projection.layers." in k for k in moved)  # the stem learns
    assert not any(".text_encoder." in k or k.startswith("adapters.") or "tracker" in k for k in moved)
    exported = load_file(folder / "model.safetensors")
    assert not any("object_heads" in k for k in exported)
    stem_keys = [k for k in exported if ".patch_embeddings.projection.layers." in k]
    assert stem_keys
    segmenter = load_segmenter(str(folder), device="cpu")
    stem = segmenter.model.detector_model.vision_encoder.backbone.embeddings.patch_embeddings.projection
    assert isinstance(stem, ConvStem)
    state = {f"detector_model.vision_encoder.backbone.embeddings.patch_embeddings.projection.{k}": v
             for k, v in stem.state_dict().items()}
    assert all(torch.equal(state[k], exported[k].float()) for k in stem_keys)  # the trained stem, not a fresh one
    features = segmenter.encode_frame(np.zeros((64, 64, 3), np.uint8))
    (detections,) = segmenter.detect(features, ["a red circle"], ["concept"])
    assert detections.masks.shape[-2:] == (64, 64)


def test_a_stem_model_folder_without_its_stem_weights_fails_to_load(tmp_path):
    stages = [Stage(name="detect", steps=1, train_tracker=False)]
    run = TrainConfig(model="tiny-stem", tokenizer_scenes=30, out=str(tmp_path / "run"), batch_pairs=1,
                      warmup_steps=1, validation_samples=0, birth_calibration_videos=0, device="cpu", stages=stages)
    folder = train(run, progress=False)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".projection.layers." not in k}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="conv stem"):
        load_segmenter(str(folder), device="cpu")


def test_objects_stages_need_world_data_and_a_detecting_last_stage(tmp_path):
    coco = tmp_path / "coco.toml"
    coco.write_text('data = "some/images.json"\n[[stages]]\ntask = "objects"\nsteps = 5\n[[stages]]\nsteps = 5\n')
    with pytest.raises(ConfigError, match="objects.*world"):
        load_config(coco)
    last = tmp_path / "last.toml"
    last.write_text('[[stages]]\nsteps = 5\n[[stages]]\ntask = "objects"\nsteps = 5\n')
    with pytest.raises(ConfigError, match="last stage must detect"):
        load_config(last)
