"""Object-centred, zoomed-in training views of the world (`zoom_rate`): what the batches show, which stages and
splits get them, and the config errors."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from samstream.errors import ConfigError
from samstream.train.config import Stage, TrainConfig, load_config
from samstream.train.trainer import stage_batches
from samstream.train.world_batches import WorldBatches


def test_zoomed_pairs_show_one_object_large_and_validation_sees_whole_frames():
    whole = WorldBatches(64, 32, seed=4).sample(6)
    zoomed = WorldBatches(64, 32, seed=4, zoom_rate=1.0, zoom_fill=(0.35, 0.45)).sample(6)

    def largest_share(batch):  # per frame, the largest named-or-not object's share of the frame
        shares = []
        for target in batch.targets:
            masks = [m for m in (target.masks, target.others_masks) if m is not None and len(m)]
            if masks:
                shares.append(float(torch.cat(masks).sum((-1, -2)).max()) / 32 ** 2)
        return np.median(shares)

    assert largest_share(zoomed) > 2 * largest_share(whole)
    run = TrainConfig(model="tiny", zoom_rate=0.0, stages=[Stage(steps=1, zoom_rate=1.0)])
    trainable = SimpleNamespace(image_size=64, mask_size=32)
    assert stage_batches(run, trainable, 0, 0).zoom_rate == 1.0  # the stage's rate
    assert stage_batches(run, trainable, 0, 0, "heldout").zoom_rate == 0.0


def test_zoomed_views_need_world_data_and_a_range(tmp_path):
    toml = tmp_path / "coco.toml"
    toml.write_text('data = "some/images.json"\nzoom_rate = 0.5\n')
    with pytest.raises(ConfigError, match="zoom_rate.*world"):
        load_config(toml)
    toml.write_text('zoom_fill = [0.4, 0.2]\n')
    with pytest.raises(ConfigError, match="zoom_fill.*range"):
        load_config(toml)
