"""The instruction engine: instructions at SAM3-I's three levels, each with its exact target set.

An `InstructionGenerator` turns the objects of one image (or one video: attributes that hold for the whole
video) into `Instruction`s. The default, `TemplateGenerator`, needs no network: it fills templates from
the objects' category, attributes and geometry and computes the targets itself.

- concept: the noun phrase ("circle"; a COCO category), targets = every instance of it (1-to-all);
- simple: noun phrase + attribute / position / size rank / count / relation ("the red circle",
  "the two largest triangles", "the square left of the star");
- complex: no noun phrase; function, affordance, comparison or context from a documented table per class
  ("the shape that could roll", "the odd one out");
- negatives: an instruction of any level whose description matches nothing (targets = ()).

Every template has an id and a split: `heldout` templates never appear in training, so evaluation measures
generalisation to new sentences, not memorised ones. Words only recombine: a held-out template uses words
the training templates also use.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from samstream.model.levels import Level, classify_level

Split = Literal["train", "heldout"]
SPLITS: tuple[Split, ...] = ("train", "heldout")


@dataclass(frozen=True)
class ObjectView:
    """What the engine knows of one instance: its annotation id, category, attributes and geometry."""

    ann_id: int
    category: str
    attributes: dict[str, str] = field(default_factory=dict)  # colour, size, texture (world); empty for COCO
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x, y, w, h in pixels
    area: float = 0.0  # visible area (pixels); the size rank reads `extent` first
    extent: float | None = None  # true size where known (the world's radius): ranks by it, occlusion aside

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return x + w / 2, y + h / 2

    @property
    def size_key(self) -> float:
        return self.extent if self.extent is not None else self.area


@dataclass(frozen=True)
class Instruction:
    text: str
    level: Level
    kind: str  # concept | attribute | position | size | count | relation | function | comparison | negative
    targets: tuple[int, ...]  # annotation ids; () for a negative
    template: str  # template id, e.g. "simple/attribute/2"
    split: Split


class InstructionGenerator(Protocol):
    """Pluggable: a language-model generator implements the same call (see docs/data.md)."""

    def generate(self, objects: Sequence[ObjectView], rng: np.random.Generator, split: Split | None = None,
                 per_level: int = 2, negatives: int = 1) -> list[Instruction]: ...


# -- vocabulary ----------------------------------------------------------------------------------------------
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
           "hexagon": "hexagons", "diamond": "diamonds"}
NUMBERS = {2: "two", 3: "three", 4: "four"}

# Complex instructions: what each world class is for / looks like, with no noun phrase of the class itself.
# (The table docs/data.md lists.) Every phrase names exactly one class.
WORLD_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "circle": ("could roll", "looks like a wheel", "looks like a coin", "has no corners"),
    "square": ("looks like a window pane", "has four equal sides and right angles", "looks like a chess board cell"),
    "triangle": ("has three corners", "looks like a warning sign", "looks like a slice of pizza"),
    "star": ("you would draw on a night sky", "has five points", "looks like a sheriff badge"),
    "hexagon": ("looks like a honeycomb cell", "has six sides", "looks like a nut for a bolt"),
    "diamond": ("looks like a kite", "looks like a playing card suit", "stands on one corner"),
}

# COCO categories with a function phrase (complex instructions on a user's COCO data); others get none.
COCO_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "person": ("could answer a question", "is alive and walks on two legs"),
    "bicycle": ("you could pedal to work",), "motorcycle": ("you could ride on a highway",),
    "car": ("could drive you home", "has four wheels and carries a family"),
    "bus": ("carries many passengers on a city route",), "train": ("runs on rails",),
    "boat": ("floats on water",), "airplane": ("could fly you abroad",),
    "chair": ("you could sit on",), "couch": ("seats several people in a living room",),
    "bed": ("you sleep on",), "dog": ("barks",), "cat": ("purrs",), "horse": ("you could ride in a field",),
    "cup": ("you could drink from",), "bottle": ("holds a drink",), "knife": ("could cut bread",),
    "laptop": ("you could type on",), "tv": ("shows programmes",), "umbrella": ("keeps off the rain",),
}


@dataclass(frozen=True)
class Template:
    id: str
    text: str
    split: Split


def _templates(level: str, kind: str, texts: Sequence[str], heldout: Sequence[int]) -> list[Template]:
    return [Template(f"{level}/{kind}/{i}", t, "heldout" if i in heldout else "train") for i, t in enumerate(texts)]


# Placeholders: {n} noun, {ns} plural noun, {a} attribute value, {k} count word, {m} second noun,
# {f} function phrase, {side} left/right/top/bottom.
TEMPLATES: dict[str, list[Template]] = {
    "concept": _templates("concept", "concept", ["{n}", "{ns}", "the {n}", "a {n}", "the {ns}"], [3]),
    "attribute": _templates("simple", "attribute", [
        "the {a} {n}", "{a} {ns}", "the {n} that is {a}", "all {a} {ns}", "the {ns} that are {a}", "the {a} {ns}",
        "a {a} {n}"], [5, 6]),
    "position": _templates("simple", "position", [
        "the {n} on the {side}", "the {side}most {n}", "the {n} furthest to the {side}", "the {side} {n}",
        "the {n} that is on the {side}"], [3, 4]),
    "size": _templates("simple", "size", [
        "the largest {n}", "the smallest {n}", "the biggest {n}", "the {n} that is largest",
        "the {n} that is smallest", "the tiniest {n}"], [3, 4]),
    "count": _templates("simple", "count", ["the {k} {ns}", "all {k} {ns}", "both {ns}", "the {k} largest {ns}",
                                            "the {k} smallest {ns}"], [1]),
    "relation": _templates("simple", "relation", [
        "the {n} left of the {m}", "the {n} right of the {m}", "the {n} above the {m}", "the {n} below the {m}",
        "the {n} to the left of the {m}", "the {n} that is below the {m}"], [4, 5]),
    "function": _templates("complex", "function", [
        "the shape that {f}", "something that {f}", "whatever {f}", "the thing that {f}", "the one thing that {f}",
        "the one that {f}", "what {f}"], [4, 5]),
    "colour_function": _templates("complex", "colour_function", [
        "something {a} that {f}", "the {a} thing that {f}", "whatever is {a} and {f}"], [2]),
    "comparison": _templates("complex", "comparison", [
        "the odd one out", "whatever is biggest", "the thing that is smallest", "the one that looks different from the rest",
        "whatever looks different from the rest", "the one that is largest of all"], [3, 5]),
}


def template_ids(split: Split | None = None) -> list[str]:
    return [t.id for ts in TEMPLATES.values() for t in ts if split is None or t.split == split]


# -- the generator ------------------------------------------------------------------------------------------
class TemplateGenerator:
    """The built-in, offline generator. `functions` maps a category to its complex function phrases."""

    def __init__(self, functions: dict[str, tuple[str, ...]] | None = None,
                 vocabulary: Sequence[str] | None = None, attributes: dict[str, Sequence[str]] | None = None,
                 static: bool = False) -> None:
        # static: only what holds for a whole video (no position or relation words: objects move)
        self.static = static
        self.functions = WORLD_FUNCTIONS if functions is None else functions
        # Categories and attribute values negatives may name (absent from the image): the dataset's own.
        self.vocabulary = list(vocabulary) if vocabulary is not None else list(WORLD_FUNCTIONS)
        self.attribute_values = {k: list(v) for k, v in (attributes or {}).items()}

    def generate(self, objects: Sequence[ObjectView], rng: np.random.Generator, split: Split | None = None,
                 per_level: int = 2, negatives: int = 1) -> list[Instruction]:
        """Up to `per_level` positive instructions of each level and `negatives` negatives, drawn from templates
        of `split` (None: both)."""
        candidates: dict[Level, list[Instruction]] = {"concept": [], "simple": [], "complex": []}
        for inst in self.all_positive(objects, split):
            candidates[inst.level].append(inst)
        chosen: list[Instruction] = []
        for level, items in candidates.items():
            if items:
                picks = rng.choice(len(items), size=min(per_level, len(items)), replace=False)
                chosen.extend(items[int(i)] for i in picks)
        negs = self.all_negative(objects, split)
        if negs and negatives:
            picks = rng.choice(len(negs), size=min(negatives, len(negs)), replace=False)
            chosen.extend(negs[int(i)] for i in picks)
        return chosen

    # -- positives ---------------------------------------------------------------------------------------
    def all_positive(self, objects: Sequence[ObjectView], split: Split | None = None) -> list[Instruction]:
        """Every positive instruction the templates of `split` give for these objects (deduplicated by text)."""
        out: list[Instruction] = []
        by_cat: dict[str, list[ObjectView]] = {}
        for obj in objects:
            by_cat.setdefault(obj.category, []).append(obj)
        for cat, group in by_cat.items():
            ids = _ids(group)
            out += self._fill("concept", "concept", split, ids, n=cat, ns=_plural(cat))
            out += self._attributes(cat, group, split)
            out += self._ranks(cat, group, split)
            if not self.static:
                out += self._relations(cat, group, by_cat, split)
            for phrase in self.functions.get(cat, ()):
                out += self._fill("complex", "function", split, ids, f=phrase)
                for name, value, members in _attribute_groups(group, ("colour",)):
                    out += self._fill("complex", "colour_function", split, _ids(members), a=value, f=phrase)
        out += self._comparisons(objects, split)
        seen: set[str] = set()
        unique = []
        for inst in out:
            if inst.text not in seen:
                seen.add(inst.text)
                unique.append(inst)
        return unique

    def _attributes(self, cat: str, group: list[ObjectView], split: Split | None) -> list[Instruction]:
        out = []
        for _name, value, members in _attribute_groups(group, ("colour", "texture", "size")):
            if len(members) == len(group) and _name != "colour":
                continue  # "the striped circle" when every circle is striped says nothing more than "circle"
            if _name == "size":
                continue  # size words are ranks below; "small" alone is ambiguous across images
            out += self._fill("simple", "attribute", split, _ids(members), a=value, n=cat, ns=_plural(cat))
        return out

    def _ranks(self, cat: str, group: list[ObjectView], split: Split | None) -> list[Instruction]:
        out = []
        if len(group) < 2:
            return out
        ranked = sorted(group, key=lambda o: o.size_key)
        smallest, largest = ranked[0], ranked[-1]
        if ranked[1].size_key > smallest.size_key * 1.2:
            for t in self._templates("size", split):
                if "small" in t.text or "tini" in t.text:
                    out.append(self._make("simple", "size", t, (smallest.ann_id,), n=cat))
        if largest.size_key > ranked[-2].size_key * 1.2:
            for t in self._templates("size", split):
                if "larg" in t.text or "big" in t.text:
                    out.append(self._make("simple", "size", t, (largest.ann_id,), n=cat))
        centres = [o.centre for o in group]
        sides = () if self.static else (("left", 0, min), ("right", 0, max), ("top", 1, min), ("bottom", 1, max))
        for side, axis, pick in sides:
            values = sorted(c[axis] for c in centres)
            best = pick(group, key=lambda o: o.centre[axis])
            gap = values[1] - values[0] if pick is min else values[-1] - values[-2]
            if gap < _scale(group) * 0.5:
                continue  # too close to call
            for t in self._templates("position", split):
                if side in ("top", "bottom") and "furthest" in t.text:
                    continue
                out.append(self._make("simple", "position", t, (best.ann_id,), n=cat, side=side))
        count = len(group)
        if count in NUMBERS:
            for t in self._templates("count", split):
                if "largest" in t.text or "smallest" in t.text:
                    continue
                if "both" in t.text and count != 2:
                    continue
                out.append(self._make("simple", "count", t, _ids(group), k=NUMBERS[count], ns=_plural(cat)))
        if count >= 3:
            for k in range(2, count):
                if k not in NUMBERS:
                    continue
                for word, members, rest in (("largest", ranked[-k:], ranked[:-k]), ("smallest", ranked[:k], ranked[k:])):
                    edge = min(o.size_key for o in members) if word == "largest" else max(o.size_key for o in members)
                    other = max(o.size_key for o in rest) if word == "largest" else min(o.size_key for o in rest)
                    if (word == "largest" and edge < other * 1.2) or (word == "smallest" and other < edge * 1.2):
                        continue
                    for t in self._templates("count", split):
                        if word in t.text:
                            out.append(self._make("simple", "count", t, _ids(members), k=NUMBERS[k], ns=_plural(cat)))
        return out

    def _relations(self, cat: str, group: list[ObjectView], by_cat: dict[str, list[ObjectView]],
                   split: Split | None) -> list[Instruction]:
        out = []
        for other_cat, others in by_cat.items():
            if other_cat == cat or len(others) != 1:
                continue  # "the m" must name one object
            anchor = others[0]
            ax, ay = anchor.centre
            margin = _scale([anchor]) * 0.5
            tests = {"left of": lambda o: o.centre[0] < ax - margin, "right of": lambda o: o.centre[0] > ax + margin,
                     "above": lambda o: o.centre[1] < ay - margin, "below": lambda o: o.centre[1] > ay + margin,
                     "under": lambda o: o.centre[1] > ay + margin}
            for t in self._templates("relation", split):
                word = next(w for w in tests if f" {w} the" in t.text)
                members = [o for o in group if tests[word](o)]
                if len(members) == 1 and len(group) > 1:  # the relation must pick out one of several
                    out.append(self._make("simple", "relation", t, _ids(members), n=cat, m=other_cat))
        return out

    def _comparisons(self, objects: Sequence[ObjectView], split: Split | None) -> list[Instruction]:
        out = []
        if len(objects) >= 3:
            cats = [o.category for o in objects]
            odd = [o for o in objects if cats.count(o.category) == 1]
            if len(odd) == 1 and len(set(cats)) == 2:
                for t in self._templates("comparison", split):
                    if "odd" in t.text or "different" in t.text:
                        out.append(self._make("complex", "comparison", t, (odd[0].ann_id,)))
        if len(objects) >= 2:
            ranked = sorted(objects, key=lambda o: o.size_key)
            if ranked[-1].size_key > ranked[-2].size_key * 1.3:
                for t in self._templates("comparison", split):
                    if "big" in t.text or "largest" in t.text:
                        out.append(self._make("complex", "comparison", t, (ranked[-1].ann_id,)))
            if ranked[1].size_key > ranked[0].size_key * 1.3:
                for t in self._templates("comparison", split):
                    if "smallest" in t.text:
                        out.append(self._make("complex", "comparison", t, (ranked[0].ann_id,)))
        return out

    # -- contrasts ---------------------------------------------------------------------------------------
    def contrast(self, objects: Sequence[ObjectView], rng: np.random.Generator, split: Split | None = None,
                 shape_share: float = 0.5) -> list[Instruction]:
        """Two instructions for one image that differ in one word: the same attribute template filled with a present
        object's colour and shape, and again with one of the two swapped ("the red circle" / "the blue circle", or
        "the red circle" / "the red star"). The second names other objects or none (a negative). Asked of the same
        pixels, only that word explains why the targets differ, so a model cannot satisfy both while ignoring it
        (docs/model-card.md, "Session 19"). `shape_share`: how often the shape is the swapped word. [] when no
        visible object has a colour."""
        coloured = [o for o in objects if o.attributes.get("colour")]
        colours = self.attribute_values.get("colour", [])
        templates = self._templates("attribute", split)
        if not coloured or not templates or len(colours) < 2:
            return []
        obj = coloured[int(rng.integers(len(coloured)))]
        template = templates[int(rng.integers(len(templates)))]
        cat, colour = obj.category, obj.attributes["colour"]
        if rng.random() >= shape_share:
            others = [c for c in colours if c != colour]
            other = (cat, others[int(rng.integers(len(others)))])
        else:
            others = [c for c in self.vocabulary if c != cat]
            other = (others[int(rng.integers(len(others)))], colour)
        out = []
        for name, value in ((cat, colour), other):
            members = [o for o in objects if o.category == name and o.attributes.get("colour") == value]
            label = "attribute" if members else "negative"
            out.append(self._make("simple", label, template, _ids(members), a=value, n=name, ns=_plural(name)))
        return out

    # -- negatives ---------------------------------------------------------------------------------------
    def all_negative(self, objects: Sequence[ObjectView], split: Split | None = None) -> list[Instruction]:
        """Instructions of each level that describe nothing here: an absent category, or a present category
        with an attribute value none of its instances has."""
        present = {o.category for o in objects}
        out: list[Instruction] = []
        for cat in self.vocabulary:
            if cat in present:
                continue
            out += self._fill("concept", "concept", split, (), n=cat, ns=_plural(cat), label="negative")
            for phrase in self.functions.get(cat, ()):
                if not any(phrase in self.functions.get(p, ()) for p in present):
                    out += self._fill("complex", "function", split, (), f=phrase, label="negative")
        for cat in sorted(present):
            group = [o for o in objects if o.category == cat]
            for name, values in self.attribute_values.items():
                have = {o.attributes.get(name) for o in group}
                for value in values:
                    if value not in have and name == "colour":
                        out += self._fill("simple", "attribute", split, (), a=value, n=cat, ns=_plural(cat),
                                          label="negative")
        return out

    # -- helpers -----------------------------------------------------------------------------------------
    def _templates(self, kind: str, split: Split | None) -> list[Template]:
        return [t for t in TEMPLATES[kind] if split is None or t.split == split]

    def _fill(self, level: Level, kind: str, split: Split | None, targets: tuple[int, ...], label: str | None = None,
              **words: str) -> list[Instruction]:
        """One instruction per template of `kind` (labelled `label`, default the kind)."""
        return [self._make(level, label or kind, t, targets, **words) for t in self._templates(kind, split)]

    @staticmethod
    def _make(level: Level, kind: str, template: Template, targets: tuple[int, ...], **words: str) -> Instruction:
        """The level is the text's own, by the rules `--level auto` applies (model/levels.py), so a model trained
        on these routes each instruction as it will be routed at run time: "the red circle" is a concept (a
        noun phrase, as SAM3 takes it), "the circle that is red" simple. `level` is the template's intent."""
        text = _articles(template.text.format(**{k: v for k, v in words.items()}))
        return Instruction(text=text, level=classify_level(text), kind=kind, targets=tuple(sorted(targets)),
                           template=template.id, split=template.split)


# "a" before a vowel sound reads "an" ("an orange diamond", COCO's "an apple"); "a one", "a unicorn" keep "a"
_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=(?!one\b|uni|use|eu)[aeiou])")


def _articles(text: str) -> str:
    return _A_BEFORE_VOWEL.sub(r"\1n ", text)


def _plural(noun: str) -> str:
    if noun in PLURALS:
        return PLURALS[noun]
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    return noun + "s"


def _ids(objects: Sequence[ObjectView]) -> tuple[int, ...]:
    return tuple(sorted(o.ann_id for o in objects))


def _scale(objects: Sequence[ObjectView]) -> float:
    """A typical object extent in pixels (for 'too close to call')."""
    return float(np.mean([max(o.bbox[2], o.bbox[3]) for o in objects])) if objects else 0.0


def _attribute_groups(group: Sequence[ObjectView], names: Sequence[str]):
    """(attribute name, value, members having it) for every value present in the group."""
    for name in names:
        values: dict[str, list[ObjectView]] = {}
        for obj in group:
            value = obj.attributes.get(name)
            if value:
                values.setdefault(value, []).append(obj)
        for value, members in values.items():
            yield name, value, members
