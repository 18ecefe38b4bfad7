"""Word noise on training instructions (`word_noise_rate`): robustness to phrasings the templates never use.

A small text encoder trained on a few templates per kind learns their scaffolding ("the thing that ...") as if it
meant something, and a held-out phrasing ("the one that ...") moves its features (docs/model-card.md, "Session
23"). Here a share of the training instructions lose some of their function words and gain random letter strings
("the thing that purrs" -> "thing qzv that purrs"), so the words that carry the meaning (shape, colour, side, size,
function) are what the model learns to read. Nothing is drawn from the evaluation's held-out templates: the noise
words are random strings, and only words from a fixed list of English function words are dropped.
"""

from __future__ import annotations

import string

import numpy as np

from samstream.train.world_batches import Batch

# determiners, relative pronouns, copulas and prepositions whose loss keeps an instruction's meaning
DROPPABLE = frozenset({"a", "an", "the", "that", "which", "is", "are", "of", "to", "on", "and"})
DROP_P = 0.3  # per droppable word of a noised instruction
INSERT_P = 0.15  # per word position of a noised instruction: a random string before it


def random_word(rng: np.random.Generator) -> str:
    """2-7 random lowercase letters, never one of the droppable words."""
    while True:
        word = "".join(rng.choice(list(string.ascii_lowercase), size=int(rng.integers(2, 8))))
        if word not in DROPPABLE:
            return word


def add_word_noise(text: str, rng: np.random.Generator) -> str:
    """`text` with some function words dropped and random strings inserted; its other words all kept, in order."""
    if all(word.lower() in DROPPABLE for word in text.split()):
        return text  # nothing but function words: they are its meaning
    words = []
    for word in text.split():
        if rng.random() < INSERT_P:
            words.append(random_word(rng))
        if word.lower() in DROPPABLE and rng.random() < DROP_P:
            continue
        words.append(word)
    return " ".join(words)


class WordNoise:
    """Wraps a stage's batch stream: each instruction is noised with probability `rate`. Seeded per batch, so a
    resumed run draws the same noise as an uninterrupted one; the wrapped stream's own draws are untouched."""

    def __init__(self, batches, rate: float, seed: int) -> None:
        self.batches, self.rate, self.seed = batches, rate, seed
        self.drawn = 0

    def skip(self, steps: int) -> None:
        self.batches.skip(steps)
        self.drawn += steps

    def sample(self, pairs: int) -> Batch:
        batch = self.batches.sample(pairs)
        rng = np.random.default_rng([self.seed, self.drawn])
        self.drawn += 1
        batch.texts = [add_word_noise(text, rng) if rng.random() < self.rate else text for text in batch.texts]
        return batch
