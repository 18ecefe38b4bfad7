"""The procedural world: deterministic, exact masks, occlusion, every motion kind, and the dataset files."""

import json
import subprocess
import sys

import av
import numpy as np
import pytest

from samstream.data.formats import decode_rle, load_dataset
from samstream.data.world import MOTIONS, make_scene, object_mask, random_object, render


def test_same_seed_same_video_other_seed_other_video():
    a, b, c = make_scene(7, 10), make_scene(7, 10), make_scene(8, 10)
    assert a == b and a != c
    fa, ma = render(a, 5, 96, 64)
    fb, mb = render(b, 5, 96, 64)
    assert np.array_equal(fa, fb) and all(np.array_equal(ma[k], mb[k]) for k in ma)


def test_a_palette_scene_draws_every_colour_from_that_many_and_leaves_other_scenes_alone():
    scenes = [make_scene(seed, 1, 4, 6, palette=palette) for seed in range(20) for palette in (1, 2)]
    for scene, palette in zip(scenes, [1, 2] * 20):
        assert len({o.colour for o in scene.objects}) <= palette
    assert any(len({o.colour for o in s.objects}) == 2 for s in scenes[1::2])
    free = [make_scene(seed, 1, 4, 6) for seed in range(20)]
    assert max(len({o.colour for o in s.objects}) for s in free) >= 4  # the usual scenes keep their many colours
    assert make_scene(3, 1) == make_scene(3, 1, palette=None)  # (evaluation sets are drawn exactly as before)
    with pytest.raises(ValueError, match="palette must be"):
        make_scene(3, 1, palette=0)


def test_visible_masks_are_disjoint_and_cut_by_occluders():
    scene = make_scene(3, 20, min_objects=6, max_objects=6)
    for t in range(0, 20, 5):
        frame, visible = render(scene, t, 160, 120)
        stack = np.stack(list(visible.values()))
        assert stack.sum(axis=0).max() <= 1  # no pixel belongs to two objects
        for obj in scene.objects:
            assert not (visible[obj.id] & ~object_mask(obj, t, 160, 120)).any()
        given = {obj.id: object_mask(obj, t, 160, 120) for obj in scene.objects}
        same_frame, same_visible = render(scene, t, 160, 120, silhouettes=given)  # the caller's silhouettes
        assert np.array_equal(frame, same_frame) and all(np.array_equal(visible[k], same_visible[k]) for k in visible)


def test_front_object_hides_back_object_where_they_overlap():
    rng = np.random.default_rng(0)
    back = random_object(rng, 1, 10, shape="square", size="large", motion="still")
    front = random_object(rng, 2, 10, shape="circle", size="small", motion="still")
    front = type(front)(**{**front.__dict__, "x0": back.x0, "y0": back.y0, "z": back.z + 1})
    scene = type(make_scene(0, 10))(id=1, frames=10, background=make_scene(0, 10).background, objects=(back, front))
    frame, visible = render(scene, 0, 100, 100)
    overlap = object_mask(back, 0, 100, 100) & object_mask(front, 0, 100, 100)
    assert overlap.any()
    assert visible[2][overlap].all() and not visible[1][overlap].any()


@pytest.mark.parametrize("motion", MOTIONS)
def test_every_motion_kind(motion):
    rng = np.random.default_rng(1)
    obj = random_object(rng, 1, 60, motion=motion, size="small")
    path = [obj.position(t) for t in range(60)]
    moved = np.hypot(path[-1][0] - path[0][0], path[-1][1] - path[0][1])
    if motion == "still":
        assert moved == 0
    else:
        assert moved > 0.05
    if motion == "bouncing":
        assert all(obj.radius - 1e-9 <= x <= 1 - obj.radius + 1e-9 for x, _ in path)
    if motion == "crossing":  # starts and ends outside the frame
        masks = [object_mask(obj, t, 80, 60).any() for t in range(60)]
        assert not masks[0] and any(masks)


def test_synth_cli_writes_videos_and_images_with_matching_masks(tmp_path):
    out = tmp_path / "set"
    done = subprocess.run([sys.executable, "-m", "samstream", "synth", "--videos", "2", "--frames", "12", "--images",
                           "3", "--out", str(out), "--width", "96", "--height", "64", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    videos = load_dataset(out)
    assert [v["length"] for v in videos["videos"]] == [12, 12]
    video = videos["videos"][0]
    with av.open(str(out / video["file"])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (64, 96, 3)
    scene = make_scene(0, 12, scene_id=1)  # seed 0, first video
    for ann in (a for a in videos["annotations"] if a["video_id"] == video["id"]):
        _, visible = render(scene, 6, 96, 64)
        seg = ann["segmentations"][6]
        expected = visible[ann["object_id"]]
        assert (seg is None) == (not expected.any())
        if seg is not None:
            assert np.array_equal(decode_rle(seg), expected)
    images = json.loads((out / "images.json").read_text())
    assert len(images["images"]) == 3 and all((out / i["file_name"]).exists() for i in images["images"])
    assert {a["image_id"] for a in images["annotations"]} <= {1, 2, 3}
    assert all(a["segmentation"]["size"] == [64, 96] for a in images["annotations"])


def test_synth_rejects_bad_arguments_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "samstream", "synth", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["samstream: error: nothing to make: give --videos N and/or --images N (N > 0)"]
    assert not (tmp_path / "x").exists()
