"""`samstream eval`: an oracle model scores perfectly (the bookkeeping is right), a real tiny model runs the
whole path from the CLI, bad data fails cleanly."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from samstream.data.engine import instruction_set
from samstream.data.formats import decode_rle, load_dataset
from samstream.data.synth import synthesize
from samstream.eval.evaluator import evaluate
from samstream.eval.segmentation import OUTCOMES
from samstream.model.segmenter import Detections, FrameFeatures, ModelInfo


class _OracleMemory:
    def __init__(self, oracle):
        self.oracle, self.objects = oracle, {}

    def condition(self, features, masks):
        for obj_id, mask in masks.items():
            self.objects[obj_id] = self.oracle.annotation_under(features.data, mask)

    def propagate(self, features):
        return {obj_id: (self.oracle.mask(features.data, ann), 0.95) for obj_id, ann in self.objects.items()}

    def forget(self, ids):
        for obj_id in ids:
            self.objects.pop(obj_id, None)

    def __len__(self):
        return 1


class Oracle:
    """Knows every frame (by its exact pixels: PNG frames) and answers each instruction with its targets' masks."""

    info = ModelInfo(name="oracle", parameters=0, trained=True, score_threshold=0.5, birth_threshold=0.7,
                     image_size=64, device="cpu")

    def __init__(self, root: Path):
        self.frames, self.masks, self.records, self.items = {}, {}, {}, {}
        for kind in ("images", "videos"):
            data = load_dataset(root, kind)
            for rec in json.loads((root / f"{kind}.instructions.json").read_text())["instructions"]:
                self.records[(kind, rec.get("image_id", rec.get("video_id")), rec["instruction"])] = rec["targets"]
            for item in data[kind]:
                names = [item["file_name"]] if kind == "images" else item["file_names"]
                for t, name in enumerate(names):
                    self.frames[cv2.imread(str(root / name)).tobytes()] = (kind, item["id"], t)
            for ann in data["annotations"]:
                segs = [ann["segmentation"]] if kind == "images" else ann["segmentations"]
                self.masks[(kind, ann["id"])] = [decode_rle(s) if s else None for s in segs]
                self.items[(kind, ann["id"])] = ann.get("image_id", ann.get("video_id"))
        self.shape = next(m for ms in self.masks.values() for m in ms if m is not None).shape

    def mask(self, key, ann):
        m = self.masks[(key[0], ann)][key[2]]
        return m if m is not None else np.zeros(self.shape, bool)

    def annotation_under(self, key, mask):
        overlaps = {ann: (self.mask(key, ann) & mask).sum() for (kind, ann), item in self.items.items()
                    if kind == key[0] and item == key[1]}
        return max(overlaps, key=overlaps.get)

    def encode_frame(self, rgb):
        key = self.frames[cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).tobytes()]
        return FrameFeatures(rgb.shape[0], rgb.shape[1], key)

    def detect(self, features, instructions, levels):
        kind, item, _ = features.data
        out = []
        for text in instructions:
            masks = [self.mask(features.data, a) for a in self.records[(kind, item, text)]]
            masks = [m for m in masks if m.any()]
            out.append(Detections(np.stack(masks) if masks else np.zeros((0, *self.shape), bool),
                                  np.full(len(masks), 0.9, np.float32)))
        return out

    def embed(self, features, masks):
        return np.ones((len(masks), 4), np.float32) / 2

    def new_memory(self):
        return _OracleMemory(self)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalset")
    synthesize(root, videos=2, frames=8, images=6, width=96, height=96, seed=5, as_images=True, progress=False)
    for kind in ("images", "videos"):
        records = instruction_set(load_dataset(root, kind), split="heldout", per_level=2, negatives=1, seed=1)
        (root / f"{kind}.instructions.json").write_text(json.dumps({"instructions": records}))
    return root


def test_an_oracle_scores_perfectly(dataset):
    report = evaluate(Oracle(dataset), dataset, keyframe_every=1, progress=False)
    images = report["images"]["levels"]
    assert images["all"]["samples"] > 0 and images["all"]["negatives"] > 0
    for level, summary in images.items():
        if summary["samples"]:
            assert summary["gIoU"] == 1.0 and summary["cIoU"] == 1.0 and summary["P@0.5"] == 1.0, level
        if summary["negatives"]:
            assert summary["no_target_accuracy"] == 1.0, level
    sizes = report["images"]["sizes"]
    assert sum(s["samples"] for s in sizes.values()) == images["all"]["samples"]
    assert all(s["gIoU"] == 1.0 for s in sizes.values())
    kinds = report["images"]["kinds"]  # every instruction lands in exactly one level/kind row
    assert sum(k["samples"] + k["negatives"] for k in kinds.values()) == report["images"]["instructions"]
    assert "concept/negative" in kinds or "simple/negative" in kinds or "complex/negative" in kinds
    assert all(k["gIoU"] in (None, 1.0) for k in kinds.values())
    templates = report["images"]["templates"]  # ... and in exactly one template row
    assert sum(t["samples"] + t["negatives"] for t in templates.values()) == report["images"]["instructions"]
    assert all(name.split("/")[0] in ("concept", "simple", "complex") for name in templates)
    outcomes = report["images"]["outcomes"]  # every sample with targets found, none merged with other objects
    assert outcomes["all"]["samples"] == images["all"]["samples"] and outcomes["all"]["found"] == 1.0
    rows = report["images"]["per_instruction"]  # one row per instruction, naming it and how it went
    assert len(rows) == report["images"]["instructions"]
    assert all(r["IoU"] == 1.0 and r["outcome"] == "found" and not r["empty"] for r in rows if r["targets"])
    assert all(r["IoU"] is None and r["empty"] for r in rows if not r["targets"])
    videos = report["videos"]["levels"]["all"]
    assert videos["samples"] > 0
    assert videos["IDF1"] == pytest.approx(1.0) and videos["HOTA"] == pytest.approx(1.0)
    assert videos["J&F"] == pytest.approx(1.0) and videos["MOTA"] == pytest.approx(1.0)
    assert videos["DetA"] == pytest.approx(1.0) and videos["AssA"] == pytest.approx(1.0)
    video_rows = report["videos"]["per_instruction"]
    assert len(video_rows) == report["videos"]["instructions"]
    assert all(r["IDSW"] == 0 and r["predicted_tracks"] == r["gt_tracks"] for r in video_rows if r["targets"])
    assert all(r["empty"] for r in video_rows if not r["targets"])
    video_sizes = report["videos"]["sizes"]
    assert sum(s["samples"] for s in video_sizes.values()) == videos["samples"]
    assert all(s["HOTA"] == pytest.approx(1.0) and s["J&F"] == pytest.approx(1.0) for s in video_sizes.values())


def test_cli_with_a_real_tiny_model_writes_json_and_markdown(dataset, tmp_path):
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "samstream", "eval", "--data", str(dataset), "--model",
                           "builtin:tiny-random", "--out", str(out), "--max-items", "1", "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["images"]["images"] == 1 and report["videos"]["videos"] == 1
    for section in ("images", "videos"):
        for summary in report[section]["levels"].values():
            for key in ("gIoU", "cIoU", "P@0.5", "J&F", "HOTA", "IDF1", "no_target_accuracy"):
                value = summary.get(key)
                assert value is None or 0.0 <= value <= 1.0
    table = out.with_suffix(".md").read_text()
    assert "| images: level |" in table and "| videos: level |" in table and table in done.stdout
    assert "| images: level/kind |" in table
    outcomes = report["images"]["outcomes"]
    assert ("| images: outcome |" in table) == bool(outcomes)
    assert all(sum(s[o] for o in OUTCOMES) == pytest.approx(1.0) for s in outcomes.values())
    assert "| images: target size |" in table and set(report["images"]["sizes"]) <= {"small", "medium", "large"}
    assert "| videos: target size |" in table and set(report["videos"]["sizes"]) <= {"small", "medium", "large"}
    image_rows = report["images"]["per_instruction"]
    assert len(image_rows) == report["images"]["instructions"] > 0
    assert all(r["image_id"] == image_rows[0]["image_id"] and r["level"] in ("concept", "simple", "complex")
               and (r["IoU"] is None) == (r["targets"] == 0) for r in image_rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]  # no partial files left


def test_cli_rejects_a_folder_without_data(tmp_path):
    done = subprocess.run([sys.executable, "-m", "samstream", "eval", "--data", str(tmp_path), "--model",
                           "builtin:tiny-random"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "no images.json or videos.json" in done.stderr
