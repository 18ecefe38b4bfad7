"""The instruction engine: exact targets at every level, negatives, held-out templates, world and COCO sources."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from samstream.data.engine import instruction_set, objects_in_frame, objects_in_image, world_generator
from samstream.data.instructions import TEMPLATES, WORLD_FUNCTIONS, ObjectView, template_ids
from samstream.data.world import COLOURS, make_scene, object_mask, render
from samstream.model.levels import classify_level


def view(ann_id, category, colour, x, y, r, texture="solid"):
    return ObjectView(ann_id, category, {"colour": colour, "texture": texture}, (x - r, y - r, 2 * r, 2 * r),
                      float(np.pi * r * r), extent=r / 100)


SCENE = [view(1, "circle", "red", 20, 50, 8), view(2, "circle", "blue", 80, 50, 14), view(3, "circle", "red", 50, 20, 5),
         view(4, "square", "green", 50, 80, 10)]


def positives(split=None):
    return {inst.text: inst for inst in world_generator().all_positive(SCENE, split)}


def test_targets_at_every_level_are_exact():
    found = positives()
    assert found["circle"].targets == (1, 2, 3) and found["circle"].level == "concept"  # 1-to-all
    assert found["the red circle"].targets == (1, 3) and found["the red circle"].level == "concept"  # 1-to-N
    assert found["the circles that are red"].targets == (1, 3) and found["the circles that are red"].level == "simple"
    assert found["the largest circle"].targets == (2,) and found["the smallest circle"].targets == (3,)
    assert found["the circle on the left"].targets == (1,) and found["the circle on the right"].targets == (2,)
    assert found["the three circles"].targets == (1, 2, 3)
    assert found["the two largest circles"].targets == (1, 2)
    assert found["the circle left of the square"].targets == (1,)
    assert "the circle above the square" not in found  # all three are above it: the relation picks out none
    assert found["the shape that could roll"].targets == (1, 2, 3) and found["the shape that could roll"].level == "complex"
    assert found["something green that looks like a window pane"].targets == (4,)
    assert found["whatever is biggest"].targets == (2,)
    assert "the odd one out" in found and found["the odd one out"].targets == (4,)


def test_complex_instructions_name_no_class_and_simple_ones_do():
    for inst in positives().values():
        named = any(word in inst.text for word in ("circle", "square"))
        assert named == (inst.level != "complex"), inst.text


def test_auto_level_agrees_with_the_engine_for_every_positive():
    for inst in positives().values():
        assert classify_level(inst.text) == inst.level, inst.text


def test_negatives_describe_nothing_present():
    negatives = world_generator().all_negative(SCENE)
    assert negatives and all(inst.targets == () and inst.kind == "negative" for inst in negatives)
    texts = {inst.text for inst in negatives}
    assert "triangle" in texts and "the green circle" in texts and "the red circle" not in texts
    assert "circle" not in texts and "something that could roll" not in texts
    assert {inst.level for inst in negatives} == {"concept", "simple", "complex"}


def test_heldout_templates_never_reach_training_and_reuse_its_words():
    train, heldout = positives("train"), positives("heldout")
    assert train and heldout and not set(train) & set(heldout)
    assert {inst.split for inst in train.values()} == {"train"}
    assert {inst.template for inst in heldout.values()} <= set(template_ids("heldout"))
    known = {w for ts in TEMPLATES.values() for t in ts if t.split == "train" for w in t.text.split()}
    known |= {w for phrases in WORLD_FUNCTIONS.values() for p in phrases for w in p.split()}
    for kind, templates in TEMPLATES.items():
        assert any(t.split == "heldout" for t in templates) and any(t.split == "train" for t in templates), kind
        for t in templates:
            assert set(t.text.split()) <= known, t.text  # new sentences, not new words


def test_generate_draws_per_level_and_negatives_reproducibly():
    gen = world_generator()
    a = gen.generate(SCENE, np.random.default_rng(3), per_level=2, negatives=1)
    b = gen.generate(SCENE, np.random.default_rng(3), per_level=2, negatives=1)
    assert a == b
    levels = [i.level for i in a if i.targets]
    assert sorted(levels) == ["complex", "complex", "concept", "concept", "simple", "simple"]
    assert sum(1 for i in a if not i.targets) == 1


def test_world_frame_objects_leave_out_mostly_hidden_ones():
    scene = make_scene(11, 1, min_objects=6, max_objects=6)
    _, visible = render(scene, 0, 128, 128)
    silhouettes = {o.id: object_mask(o, 0, 128, 128) for o in scene.objects}
    kept = objects_in_frame(scene, visible, silhouettes)
    for obj in kept:
        assert visible[obj.ann_id].sum() >= 0.3 * silhouettes[obj.ann_id].sum()
    for inst in world_generator().all_positive(kept):
        assert set(inst.targets) <= {o.ann_id for o in kept}


def test_static_generator_has_no_position_words():
    found = world_generator(static=True).all_positive(SCENE)
    assert found and not {i.kind for i in found} & {"position", "relation"}
    assert {i.kind for i in found} >= {"concept", "attribute", "size", "count", "function", "comparison"}


def test_coco_dataset_with_its_own_categories():
    data = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "x.jpg"}],
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "chair"}, {"id": 3, "name": "dog"}],
            "annotations": [
                {"id": 10, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 60], "area": 900, "iscrowd": 0},
                {"id": 11, "image_id": 1, "category_id": 1, "bbox": [70, 5, 20, 60], "area": 1000, "iscrowd": 0},
                {"id": 12, "image_id": 1, "category_id": 2, "bbox": [40, 50, 20, 30], "area": 400, "iscrowd": 0},
                {"id": 13, "image_id": 1, "category_id": 2, "bbox": [0, 0, 9, 9], "area": 50, "iscrowd": 1}]}
    objects = objects_in_image(data, 1)
    assert [o.ann_id for o in objects] == [10, 11, 12]  # crowd left out
    records = instruction_set(data, split=None, per_level=50, negatives=50, seed=0)
    by_text = {r["instruction"]: r for r in records}
    assert by_text["person"]["targets"] == [10, 11]
    assert by_text["the person on the left"]["targets"] == [10]
    assert by_text["something that you could sit on"]["targets"] == [12]
    assert by_text["dog"]["targets"] == []  # a category of the dataset that this image lacks
    assert all(set(r) >= {"id", "image_id", "instruction", "level", "kind", "template", "split", "targets"}
               for r in records)


def test_cli_writes_records_for_synth_videos(tmp_path):
    cli = [sys.executable, "-m", "samstream"]
    subprocess.run([*cli, "synth", "--videos", "2", "--frames", "4", "--out", str(tmp_path), "--width", "64",
                    "--height", "64", "--quiet"], check=True, timeout=120)
    done = subprocess.run([*cli, "instructions", str(tmp_path / "videos.json"), "--out", str(tmp_path / "i.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "i.json").read_text())
    records = data["instructions"]
    assert records and {r["split"] for r in records} == {"heldout"}
    videos = json.loads((tmp_path / "videos.json").read_text())
    ann_ids = {a["id"] for a in videos["annotations"]}
    assert all(set(r["targets"]) <= ann_ids and "video_id" in r for r in records)
    bad = subprocess.run([*cli, "instructions", str(tmp_path / "nope.json"), "--out", str(tmp_path / "j.json")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "nope.json" in bad.stderr and not (tmp_path / "j.json").exists()


def test_indefinite_article_reads_an_before_a_vowel():
    scene = [view(1, "circle", "orange", 20, 50, 8), view(2, "square", "red", 80, 50, 10)]
    texts = [inst.text for inst in world_generator().all_positive(scene, "heldout")]
    texts += [inst.text for inst in world_generator().all_negative(scene, "heldout")]
    assert "an orange circle" in texts and "a red square" in texts
    assert not [t for t in texts if re.search(r"\ba [aeiou]", t)]


def _named(text):
    """(shape, colour) an attribute instruction names."""
    words = set(text.split())
    shape = next(n for n in WORLD_FUNCTIONS if n in words or n + "s" in words)
    colour = next(c for c in COLOURS if c in words)
    return shape, colour


def test_a_contrast_pair_differs_in_one_word_and_each_has_its_exact_targets():
    generator, rng = world_generator(), np.random.default_rng(0)
    swapped = {"colour": 0, "shape": 0}
    for _ in range(200):
        first, second = generator.contrast(SCENE, rng, "train")
        words = first.text.split(), second.text.split()
        assert len(words[0]) == len(words[1]) and sum(a != b for a, b in zip(*words)) == 1, (first.text, second.text)
        assert first.template == second.template and first.split == second.split == "train"
        for inst in (first, second):
            shape, colour = _named(inst.text)
            assert inst.targets == tuple(o.ann_id for o in SCENE
                                         if o.category == shape and o.attributes["colour"] == colour), inst.text
            assert (inst.kind == "negative") == (inst.targets == ())
        assert first.targets  # the first always names something present
        (shape0, colour0), (shape1, colour1) = _named(first.text), _named(second.text)
        assert (shape0 == shape1) != (colour0 == colour1)
        swapped["colour" if shape0 == shape1 else "shape"] += 1
    assert swapped["colour"] > 50 and swapped["shape"] > 50  # both kinds of swap are drawn
    for share, same_shape in ((0.0, True), (1.0, False)):  # shape_share: how often the shape is the swapped word
        for _ in range(20):
            first, second = generator.contrast(SCENE, rng, shape_share=share)
            assert (_named(first.text)[0] == _named(second.text)[0]) == same_shape
    assert generator.contrast([view(1, "circle", None, 20, 50, 8)], rng) == []  # nothing coloured: no pair
