"""Word noise on training instructions: content words always kept, function words sometimes dropped, random
strings inserted; the scenes and targets of the stream are untouched, validation is never noised, and a resumed
stream draws the same noise."""

from types import SimpleNamespace

import numpy as np
import torch

from samstream.train.config import Stage, TrainConfig
from samstream.train.trainer import stage_batches
from samstream.train.word_noise import DROPPABLE, add_word_noise

SIZES = SimpleNamespace(image_size=64, mask_size=16)


def test_noise_keeps_every_content_word_in_order_and_drops_only_function_words():
    rng = np.random.default_rng(0)
    text = "the purple hexagon that is on the left and honeycomb"
    original = text.split()
    dropped = inserted = 0
    for _ in range(400):
        noisy = add_word_noise(text, rng).split()
        extra = [w for w in noisy if w not in original]  # inserted strings
        assert all(w.isalpha() and w.islower() and 2 <= len(w) <= 7 and w not in DROPPABLE for w in extra)
        inserted += len(extra)
        kept = iter(w for w in noisy if w in original)
        expected = next(kept, None)
        for word in original:  # the rest is the original, in order, less some function words
            if word == expected:
                expected = next(kept, None)
            else:
                assert word in DROPPABLE, (word, noisy)
                dropped += 1
        assert expected is None, noisy
    function_words = sum(w in DROPPABLE for w in original) * 400
    assert 0.2 < dropped / function_words < 0.4  # DROP_P = 0.3
    assert 0.1 < inserted / (len(original) * 400) < 0.2  # INSERT_P = 0.15


def test_an_instruction_of_function_words_only_is_left_as_it_is():
    rng = np.random.default_rng(1)
    assert all(add_word_noise("the", rng) == "the" for _ in range(50))
    assert all(add_word_noise("that is", rng) == "that is" for _ in range(50))
    assert all(add_word_noise("the one", rng).split()[-1] == "one" for _ in range(50))


def test_the_stream_noises_a_share_of_training_texts_and_leaves_scenes_and_validation_alone():
    plain = TrainConfig(instructions_per_frame=2, stages=[Stage(steps=1)])
    noisy = plain.model_copy(update={"word_noise_rate": 0.5})
    a, b = stage_batches(plain, SIZES, 0, 0).sample(16), stage_batches(noisy, SIZES, 0, 0).sample(16)
    assert torch.equal(a.pixels, b.pixels) and a.levels == b.levels and len(a.texts) == len(b.texts) == 64
    changed = sum(x != y for x, y in zip(a.texts, b.texts))
    assert 10 < changed < 40  # half of them drawn, and a drawn one may come out unchanged
    for target_a, target_b in zip(a.targets, b.targets):
        assert torch.equal(target_a.masks, target_b.masks)
    held_a = stage_batches(plain, SIZES, 0, 0, split="heldout").sample(8)
    held_b = stage_batches(noisy, SIZES, 0, 0, split="heldout").sample(8)
    assert held_a.texts == held_b.texts


def test_a_resumed_stream_draws_the_same_noise_as_an_uninterrupted_one():
    from samstream.train.word_noise import WordNoise

    class SameTexts:  # a stream whose batches all ask the same instructions
        def sample(self, pairs):
            return SimpleNamespace(texts=["the red circle on the left", "the thing that is blue"] * pairs)

        def skip(self, steps):
            pass

    straight = WordNoise(SameTexts(), 1.0, seed=5)
    first, second = straight.sample(8).texts, straight.sample(8).texts
    assert first != second  # each batch draws its own noise
    resumed = WordNoise(SameTexts(), 1.0, seed=5)
    resumed.skip(1)
    assert resumed.sample(8).texts == second
