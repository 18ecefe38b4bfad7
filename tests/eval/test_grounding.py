"""`word_grounding`: which words a model grounds, checked with a segmenter that truly reads colours (and knows no
shapes), on whole frames and zoomed views; and `samstream eval --grounding` with a real tiny model."""

import json
import subprocess
import sys

import numpy as np
import pytest

from samstream.data.synth import synthesize
from samstream.data.world import COLOURS
from samstream.eval.grounding import word_grounding
from samstream.model.segmenter import Detections, FrameFeatures, ModelInfo


class ColourReader:
    """Answers "the <colour> <shape>" with the pixels near that colour (score 0.9) and shape words with nothing:
    a model that grounds colour and not shape, on any pixels (whole frames or zoomed views)."""

    info = ModelInfo(name="colour-reader", parameters=0, trained=True, score_threshold=0.5, birth_threshold=0.7,
                     image_size=64, device="cpu")

    def encode_frame(self, rgb):
        return FrameFeatures(rgb.shape[0], rgb.shape[1], rgb)

    def detect(self, features, instructions, levels):
        rgb = features.data.astype(np.int32)
        out = []
        for text in instructions:
            colour = next((c for c in COLOURS if f" {c} " in f" {text} "), None)
            if colour is None:
                out.append(Detections(np.zeros((0, *rgb.shape[:2]), bool), np.zeros(0, np.float32)))
                continue
            near = np.abs(rgb - np.array(COLOURS[colour])).sum(-1) < 60
            out.append(Detections(near[None], np.array([0.9], np.float32)))
        return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounding")
    synthesize(root, images=6, width=128, height=128, seed=3, progress=False)
    return root


def test_a_model_that_reads_colours_grounds_colour_and_not_shape(images):
    report = word_grounding(ColourReader(), images, progress=False)
    assert report["objects"] >= 10 and report["images"] == 6
    assert report["colour"]["whole"] > 0.7 and report["colour"]["zoomed"] > 0.7
    assert report["shape"]["whole"] == 0.0 and report["shape"]["zoomed"] == 0.0  # no answer is no credit
    assert report["shape"]["chance"] == pytest.approx(1 / 6, abs=1e-3)


def test_cli_reports_grounding_with_a_real_tiny_model(images, tmp_path):
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "samstream", "eval", "--data", str(images), "--model",
                           "builtin:tiny-random", "--grounding", "--max-items", "1", "--quiet", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    grounding = json.loads(out.read_text())["grounding"]
    assert grounding["images"] == 1 and grounding["objects"] >= 1
    assert all(0.0 <= grounding[a][w] <= 1.0 for a in ("shape", "colour") for w in ("whole", "zoomed"))
    assert "| shape |" in out.with_suffix(".md").read_text()
    videos_only = tmp_path / "videos"
    synthesize(videos_only, videos=1, frames=3, width=64, height=64, seed=1, progress=False)
    done = subprocess.run([sys.executable, "-m", "samstream", "eval", "--data", str(videos_only), "--model",
                           "builtin:tiny-random", "--grounding"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "--grounding needs an image set" in done.stderr
