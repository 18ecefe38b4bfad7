"""Instruction levels (SAM3-I's taxonomy) and the `auto` rule set that picks one when the caller does not.

- concept: a bare noun phrase, as SAM3 takes it ("forklift", "soccer player", "yellow school bus").
- simple: a noun phrase plus attributes, position, order, count or relations
  ("the person in the red jacket on the left", "the two largest boxes").
- complex: no noun phrase to anchor on; function, action, affordance or context
  ("whoever is about to be hit by the door", "something to sit on").

The rules, in order (documented in docs/model.md, tested in tests/model/test_levels.py):
1. complex if the text starts with an indefinite / wh- head ("who", "whoever", "what", "which one",
   "something", "anything", "the one that", "the thing", "the red shape that", "whatever", "objects that" ...), or
   contains a modal /
   purpose / prediction cue ("could", "can be", "might", "likely", "about to", "used to", "used for",
   "in order to", "able to", "going to");
2. simple if, after a leading article, it contains a relation, position, order, count or clause word
   ("that", "left", "behind", "largest", "two", "with", "in", "wearing" ...) or has more than four words;
3. concept otherwise (a noun phrase with or without an article and adjectives: "the bird", "a red car").
"""

from __future__ import annotations

import re
from typing import Literal, get_args

Level = Literal["concept", "simple", "complex"]
LEVELS: tuple[Level, ...] = get_args(Level)
AUTO = "auto"

_COMPLEX_HEADS = re.compile(
    r"^(who|whom|whoever|whomever|what|whatever|which|whichever|where|something|anything|someone|anyone|"
    r"somebody|anybody|the one|the ones|one that|ones that|the thing|the things|the object that|"
    r"the objects that|objects that|things that|an object that|an item that|items that|whatever|"
    r"the (\w+ )?(shape|shapes|thing|things|object|objects|item|items) that)\b"
)
_COMPLEX_CUES = re.compile(
    r"\b(could|can be|might|would|should|likely|about to|used to|used for|in order to|able to|"
    r"going to|meant for|designed to|suitable for|needed to|need to|helps?|odd one out|for \w+ing)\b"
)
_LEADING_ARTICLE = re.compile(r"^(the|a|an)\s+")
_SIMPLE_CUES = re.compile(
    r"\b(that|which|who|with|without|in|on|at|of|near|next|behind|front|above|below|under|over|"
    r"between|beside|left|right|top|bottom|middle|center|centre|far|closest|nearest|largest|smallest|"
    r"biggest|tallest|shortest|tiniest|\w+most|first|second|third|last|one|two|three|four|five|several|all|both|each|"
    r"every|wearing|holding|carrying|sitting|standing|walking|running|riding|is|are|than|more|most|less)\b"
)


def classify_level(instruction: str) -> Level:
    """The instruction's level by the documented rule set above."""
    text = " ".join(instruction.lower().split())
    if _COMPLEX_HEADS.search(text) or _COMPLEX_CUES.search(text):
        return "complex"
    text = _LEADING_ARTICLE.sub("", text)
    if _SIMPLE_CUES.search(text) or len(text.split()) > 4:
        return "simple"
    return "concept"


def resolve_level(instruction: str, level: str | None = None) -> Level:
    """`level` as given (validated), or the classified one for None / 'auto'."""
    if level is None or level == AUTO:
        return classify_level(instruction)
    if level not in LEVELS:
        raise ValueError(f"unknown instruction level {level!r}: use one of {', '.join(LEVELS)} or auto")
    return level  # type: ignore[return-value]
