import numpy as np
from pycocotools import mask as coco

from samstream.masks import fill_holes, mask_iou, mask_nms


def test_mask_iou_matches_pycocotools():
    rng = np.random.default_rng(0)
    a = rng.random((3, 20, 30)) > 0.5
    b = rng.random((4, 20, 30)) > 0.6
    ours = mask_iou(a, b)
    rle = lambda m: coco.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))  # noqa: E731
    theirs = coco.iou(rle(a), rle(b), [0] * len(b))
    assert np.allclose(ours, theirs, atol=1e-6)


def test_mask_nms_keeps_the_best_of_overlapping_masks():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :5, :5] = True
    masks[1, :5, :4] = True  # overlaps mask 0 (IoU 0.8)
    masks[2, 6:, 6:] = True
    keep = mask_nms(masks, np.array([0.6, 0.9, 0.5]), iou_threshold=0.5)
    assert keep.tolist() == [1, 2]


def test_fill_holes_fills_small_holes_and_removes_specks():
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 2:15, 2:15] = True
    mask[0, 6:8, 6:8] = False  # a 4-pixel hole
    mask[0, 18, 18] = True  # a 1-pixel speck
    out = fill_holes(mask, max_area=4)
    assert out[0, 6:8, 6:8].all() and not out[0, 18, 18]
    assert out[0, 2:15, 2:15].all()
    assert np.array_equal(fill_holes(mask, 0), mask)
