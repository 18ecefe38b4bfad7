""""Every object" instructions (`every_object_rate`): a share of training frames is asked one more instruction whose
targets are all its visible objects; its rows point at the right frame, validation never gets one, the tokenizer
learns the phrases, and a run with them trains and exports."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from samstream.train.config import Stage, TrainConfig
from samstream.train.every_object import EVERY_OBJECT_PHRASES, every_object_instruction
from samstream.train.setup import build_trainable
from samstream.train.trainer import stage_batches, train

SIZES = SimpleNamespace(image_size=64, mask_size=16)


def test_every_frame_with_objects_gets_one_instruction_naming_all_of_them():
    run = TrainConfig(instructions_per_frame=2, every_object_rate=1.0, negative_rate=0.5, stages=[Stage(steps=1)])
    batch = stage_batches(run, SIZES, 0, 0).sample(8)
    extra = [i for i, text in enumerate(batch.texts) if text in EVERY_OBJECT_PHRASES]
    assert len(extra) == 16  # every frame has an object in view (min_objects = 1)
    for i in extra:
        siblings = [j for j in range(len(batch.texts)) if batch.frames[j] == batch.frames[i] and j != i]
        assert len(siblings) == 2 and batch.levels[i] == "concept"
        target, sibling = batch.targets[i], batch.targets[siblings[0]]
        assert target.others_masks is None or len(target.others_masks) == 0  # nothing in view is left out
        assert len(target.masks) == len(sibling.masks) + len(sibling.others_masks)  # the same frame's objects
        everything = torch.cat([sibling.masks, sibling.others_masks]).amax(0)
        assert torch.allclose(target.masks.amax(0), everything)


def test_the_rate_is_a_share_of_frames_and_zero_leaves_the_stream_as_it_was():
    plain = TrainConfig(instructions_per_frame=2, stages=[Stage(steps=1)])
    some = plain.model_copy(update={"every_object_rate": 0.3})
    a, b = stage_batches(plain, SIZES, 0, 0).sample(32), stage_batches(some, SIZES, 0, 0).sample(32)
    assert not any(text in EVERY_OBJECT_PHRASES for text in a.texts)
    asked = sum(text in EVERY_OBJECT_PHRASES for text in b.texts)
    assert 8 <= asked <= 32  # about 0.3 x 64 frames
    again = stage_batches(plain, SIZES, 0, 0).sample(32)
    assert a.texts == again.texts and torch.equal(a.pixels, again.pixels)
    validation = stage_batches(some, SIZES, 0, 0, split="heldout").sample(16)
    assert not any(text in EVERY_OBJECT_PHRASES for text in validation.texts) and validation.frames is None


def test_one_instruction_per_frame_still_maps_each_sample_to_its_frame():
    run = TrainConfig(every_object_rate=1.0, stages=[Stage(steps=1)])
    batch = stage_batches(run, SIZES, 0, 0).sample(4)
    assert len(batch.texts) == 16 and batch.frames == [row for row in range(8) for _ in range(2)]


def test_a_stage_can_override_the_rate():
    run = TrainConfig(instructions_per_frame=2, every_object_rate=1.0,
                      stages=[Stage(steps=1), Stage(steps=1, every_object_rate=0.0)])
    first, last = (stage_batches(run, SIZES, i, 0).sample(8) for i in range(2))
    assert sum(text in EVERY_OBJECT_PHRASES for text in first.texts) == 16
    assert not any(text in EVERY_OBJECT_PHRASES for text in last.texts)
    # a rate set on one stage alone still needs the world, and still teaches the tokenizer the phrases
    with pytest.raises(ValueError, match="every_object_rate"):
        TrainConfig(data="annotations.json", stages=[Stage(steps=1, every_object_rate=0.2)])
    staged = TrainConfig(model="tiny", tokenizer_scenes=20, stages=[Stage(steps=1, every_object_rate=0.2)])
    tokenizer = build_trainable(staged, torch.device("cpu")).tokenizer
    assert len(tokenizer("every shape", add_special_tokens=False)["input_ids"]) == 2


def test_every_object_instruction_needs_objects_and_the_world():
    with pytest.raises(ValueError, match="visible object"):
        every_object_instruction([], np.random.default_rng(0))
    with pytest.raises(ValueError, match="every_object_rate"):
        TrainConfig(data="annotations.json", every_object_rate=0.2)


def test_the_tokenizer_reads_each_phrase_word_as_one_token_and_a_run_trains(tmp_path):
    run = TrainConfig(model="tiny", every_object_rate=0.5, instructions_per_frame=2, tokenizer_scenes=20,
                      tokenizer_prefix_space=True, out=str(tmp_path / "run"), batch_pairs=1, warmup_steps=1,
                      log_every=1, checkpoint_every=2, validation_samples=4, birth_calibration_videos=0,
                      spatial_calibration_images=0,
                      device="cpu", stages=[Stage(steps=2)])
    tokenizer = build_trainable(run, torch.device("cpu")).tokenizer
    for phrase in EVERY_OBJECT_PHRASES:
        ids = tokenizer(phrase, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(phrase.split()), (phrase, tokenizer.convert_ids_to_tokens(ids))
    model = train(run, progress=False)
    assert (model / "samstream.json").is_file()
