import torch

from samstream.bench import INSTRUCTION_COUNTS, bench_preset


def test_bench_model_reports_every_split():
    report = bench_preset("tiny", torch.device("cpu"), repeats=1)
    assert report["image_size"] == 112 and report["vision_ms"] > 0 and report["propagation_frame_ms"] > 0
    assert set(report["instructions"]) == {str(n) for n in INSTRUCTION_COUNTS}
    for row in report["instructions"].values():
        assert row["detector_ms"] > 0 and row["mask_head_ms"] > 0 and row["text_ms_uncached"] > 0
        assert row["keyframe_ms"] >= report["vision_ms"]


def test_bench_tracker_reports_costs_and_memory():
    from samstream.bench import OBJECT_COUNTS, bench_tracker

    report = bench_tracker(device="cpu", frames=60, repeats=1)
    assert set(report["objects"]) == {str(n) for n in OBJECT_COUNTS}
    assert all(row["keyframe_ms"] > 0 and row["non_keyframe_ms"] > 0 for row in report["objects"].values())
    assert report["ratio_16_vs_1_objects"] > 0 and len(report["ratio_16_vs_1_objects_by_round"]) == 1
    assert report["model"] == "builtin:small"  # the trained model: propagated masks are object-sized
    assert report["long_run"]["rss_mb_samples"] and report["long_run"]["rss_growth_after_warmup_pct"] is not None


def test_cli_bench_model_writes_both_presets(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "samstream", "bench", "model", "--repeats", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "model" and set(report["results"]) == {"tiny", "small"}
    assert all(row["vision_ms"] > 0 and row["peak_rss_mb"] > 0 for row in report["results"].values())


def test_bench_train_times_a_detector_and_a_tracker_step_per_precision():
    from samstream.model.precision import cpu_has_native_bf16
    from samstream.train.bench import bench_train

    report = bench_train(device="cpu", repeats=1, model="tiny")
    expected = {"fp32", "bf16"} if cpu_has_native_bf16() else {"fp32"}
    assert set(report["steps"]) == expected and report["instructions_per_step"] == 32
    for row in report["steps"].values():
        assert row["detector_step_ms"] > 0 and row["tracker_step_ms"] > 0
    assert ("bf16_speedup" in report) == ("bf16" in expected)
