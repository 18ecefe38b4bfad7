"""`samstream calibrate`: a trained model folder's thresholds chosen anew, into a new folder with the same weights."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from samstream.model.adapter_io import ADAPTERS_FILE
from samstream.model.loader import load_segmenter
from samstream.train.config import Stage, TrainConfig
from samstream.train.trainer import train

CLI = [sys.executable, "-m", "samstream", "calibrate"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(model="tiny", tokenizer_scenes=20, text_init="identity", out=str(out), batch_pairs=1,
                         warmup_steps=1, validation_samples=4, birth_calibration_videos=1, birth_calibration_frames=4,
                         spatial_calibration_images=4, device="cpu", stages=[Stage(steps=2)])
    return train(config, progress=False)


def test_calibrate_writes_the_same_weights_with_thresholds_chosen_again(trained, tmp_path):
    out = tmp_path / "recalibrated"
    done = subprocess.run([*CLI, str(trained), "--out", str(out), "--samples", "40"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{out} written: score threshold" in done.stdout
    for stage in ("score threshold", "text reliance", "instance separation", "birth threshold",
                  "spatial rules"):  # progress bars
        assert any(stage in line and "100%" in line for line in done.stderr.replace("\r", "\n").splitlines()), stage
    for name in ("model.safetensors", ADAPTERS_FILE):
        before, after = load_file(trained / name), load_file(out / name)
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    old, new = (json.loads((folder / "samstream.json").read_text()) for folder in (trained, out))
    assert new["training"] == old["training"]  # the run that trained the weights, not the calibration's own config
    samples = [meta["calibration"]["positives"] + meta["calibration"]["negatives"] for meta in (old, new)]
    assert samples[0] < 40 <= samples[1]  # --samples, not the training run's 4 (whole batches are drawn)
    assert "by_presence_threshold" in new["calibration"] and "birth" in new["calibration"]
    assert new["spatial_rules"] == new["calibration"]["spatial_rules"]["spatial_rules"]
    segmenter = load_segmenter(str(out), device="cpu")
    assert segmenter.info.score_threshold == new["score_threshold"]
    assert segmenter.info.presence_threshold == new.get("presence_threshold")


def test_calibrate_refuses_what_it_cannot_do_and_writes_nothing(trained, tmp_path):
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "config.json").write_text("{}")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    for args, message in [([str(trained), "--out", str(trained)], "the model folder itself"),
                          ([str(untrained), "--out", str(tmp_path / "a")], "no samstream.json"),
                          ([str(trained), "--out", str(busy)], "not empty"),
                          ([str(trained)], "--out")]:
        done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and message in done.stderr, done.stderr
    assert not (tmp_path / "a").exists() and (busy / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
