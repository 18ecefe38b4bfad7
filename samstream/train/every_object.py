""""Every object" instructions (`every_object_rate`): a frame asked for all its visible objects at once.

Why: almost every world instruction names one object, and with one target per sample "every query returns the
instruction's semantic mask" is the easy optimum, so the small model's 16 queries collapse onto one mask
(docs/model-card.md, "Sessions 12-13" and "Sessions 25-26"). SAM3 learns from exhaustive annotations, where a
phrase has many instances and Hungarian matching gives each one its own query. These instructions bring that to
the world: 1-6 targets per sample, each matched to a different query with the full detection loss (scores taught
1), unlike the `instances` loss, which taught the same queries other objects' masks with scores taught 0
("Session 21": the scores stopped following the words). Training-only: no evaluation template asks for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samstream.data.instructions import Instruction, ObjectView

EVERY_OBJECT_PHRASES = ("objects", "the objects", "all objects", "all the objects", "every object", "each object",
                        "all shapes", "every shape")
EVERY_OBJECT_TEMPLATE = "concept/every_object/train"


def every_object_instruction(objects: Sequence[ObjectView], rng: np.random.Generator) -> Instruction:
    """One of the phrases, its targets every object in `objects` (which must not be empty)."""
    if not objects:
        raise ValueError("an every-object instruction needs at least one visible object")
    text = EVERY_OBJECT_PHRASES[int(rng.integers(len(EVERY_OBJECT_PHRASES)))]
    return Instruction(text, "concept", "every_object", tuple(o.ann_id for o in objects), EVERY_OBJECT_TEMPLATE,
                       "train")
