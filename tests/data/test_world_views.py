"""Zoomed-in views of the procedural world: the whole frame at zoom 1, magnified objects and masks, and the size
words that follow what a view shows."""

import numpy as np

from samstream.data.engine import objects_in_frame
from samstream.data.world import SIZES, WHOLE_FRAME, View, make_scene, object_mask, random_object, render, size_class


def test_a_centred_view_at_zoom_one_is_the_whole_frame():
    scene = make_scene(3, 10)
    a, masks_a = render(scene, 4, 96, 64)
    b, masks_b = render(scene, 4, 96, 64, View(0.5, 0.5, 1.0))
    assert np.array_equal(a, b) and all(np.array_equal(masks_a[k], masks_b[k]) for k in masks_a)


def test_a_view_magnifies_an_object_about_its_centre():
    obj = random_object(np.random.default_rng(0), 1, 10, shape="square", size="small", motion="still")
    x, y = obj.position(0)
    whole = object_mask(obj, 0, 200, 200)
    zoomed = object_mask(obj, 0, 200, 200, View(x, y, 3.0))
    assert 7.5 < zoomed.sum() / whole.sum() < 10.5  # area x zoom^2
    ys, xs = np.nonzero(zoomed)
    assert abs(xs.mean() - 100) < 2 and abs(ys.mean() - 100) < 2  # the view's centre


def test_size_words_follow_the_view():
    assert size_class(SIZES["small"][0]) == "small" and size_class(0.11) == "medium" and size_class(0.4) == "large"
    rng = np.random.default_rng(1)
    scene = make_scene(0, 5, 1, 1)
    small = random_object(rng, 1, 5, size="small", motion="still")
    scene = type(scene)(scene.id, scene.frames, scene.background, (small,))
    x, y = small.position(0)
    for view, word in ((WHOLE_FRAME, "small"), (View(x, y, 0.3 / small.radius), "large")):
        _, visible = render(scene, 0, 128, 128, view)
        silhouettes = {small.id: object_mask(small, 0, 128, 128, view)}
        [seen] = objects_in_frame(scene, visible, silhouettes, view)
        assert seen.attributes["size"] == word
