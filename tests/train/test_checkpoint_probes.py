"""`checkpoint_probes`: each checkpoint of a detecting stage logs whether the model reads its instruction (text
reliance) and whether its queries are separate instances, on held-out frames, so a run that loses its words shows
it mid-run, not only at export."""

import json

import pytest

from samstream.train.config import Stage, TrainConfig
from samstream.train.trainer import train


def test_each_detecting_checkpoint_logs_text_reliance_and_separation(tmp_path):
    run = TrainConfig(model="tiny", instructions_per_frame=2, tokenizer_scenes=20, out=str(tmp_path / "run"),
                      batch_pairs=1, warmup_steps=1, log_every=1, checkpoint_every=1, checkpoint_probes=4,
                      validation_samples=4, birth_calibration_videos=0, spatial_calibration_images=0, device="cpu",
                      stages=[Stage(name="objects", task="objects", steps=1), Stage(name="words", steps=2)])
    train(run, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    probes = [r for r in records if "heldout_text_reliance" in r]
    assert [(r["step"], r["stage"]) for r in probes] == [(2, "words"), (3, "words")]  # none for the objects stage
    for r in probes:
        words, instances = r["heldout_text_reliance"], r["heldout_instances"]
        assert words["samples"] >= 4 and instances["frames"] >= 4
        for value in (words["top_query_iou_own_text"], words["top_query_iou_other_text"],
                      instances["best_query_iou_per_object"]):
            assert 0.0 <= value <= 1.0


def test_probes_need_the_world_and_are_off_by_default(tmp_path):
    assert TrainConfig().checkpoint_probes == 0
    with pytest.raises(ValueError, match="checkpoint_probes"):
        TrainConfig(data="annotations.json", checkpoint_probes=16)
