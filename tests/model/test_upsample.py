"""Mask upsampling: the windowed resize equals a full-frame resize exactly, at any pair of sizes."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samstream.model.upsample import upsample_masks


def _blobs(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    logits = rng.normal(-3.0, 1.0, (n, h, w)).astype(np.float32)  # a few stray positive cells too
    for k in range(n):
        r, c = int(rng.integers(0, h)), int(rng.integers(0, w))
        logits[k, max(0, r - 3): r + 3, max(0, c - 4): c + 2] += 4.0 + rng.random()
    return logits


@pytest.mark.parametrize("h,w,height,width", [(32, 32, 720, 1280), (28, 28, 480, 640), (288, 288, 1080, 1920),
                                              (32, 32, 701, 1279), (8, 8, 5, 7), (64, 48, 333, 999)])
def test_windowed_upsampling_equals_the_full_resize(h: int, w: int, height: int, width: int) -> None:
    logits = _blobs(np.random.default_rng(h * width + height), 6, h, w)
    logits[0] = -1.0  # nothing positive
    logits[1] = 1.0  # everything positive
    got = upsample_masks(torch.from_numpy(logits), height, width)
    want = np.stack([cv2.resize(x, (width, height), interpolation=cv2.INTER_LINEAR) > 0 for x in logits])
    assert got.shape == (6, height, width) and got.dtype == bool
    assert not got[0].any() and got[1].all()
    assert np.array_equal(got, want)


def test_upsampling_agrees_with_torch_bilinear() -> None:
    logits = torch.from_numpy(_blobs(np.random.default_rng(3), 4, 32, 32))
    reference = F.interpolate(logits[:, None], size=(720, 1280), mode="bilinear", align_corners=False)[:, 0]
    got = torch.from_numpy(upsample_masks(logits, 720, 1280))
    differing = got != (reference > 0)
    assert differing.float().mean() < 1e-4
    assert (reference[differing].abs() < 1e-4).all()  # only where the logit is zero up to float rounding


def test_no_masks() -> None:
    assert upsample_masks(torch.zeros(0, 32, 32), 10, 20).shape == (0, 10, 20)
