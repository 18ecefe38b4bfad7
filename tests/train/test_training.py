"""`samstream train`: adapters-only leaves SAM3 bit-identical, LoRA via peft, resume from safetensors
checkpoints, COCO data, the exported folder loads with its calibrated thresholds, bad configs fail cleanly."""

import json
from pathlib import Path
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from samstream.data.synth import synthesize
from samstream.errors import ConfigError
from samstream.model.adapter_io import ADAPTERS_FILE
from samstream.model.loader import load_segmenter, save_segmenter_model
from samstream.model.sam3i import Sam3IAdapters
from samstream.model.tiny import build_tiny_model
from samstream.train.birth import birth_candidates
from samstream.train.config import Stage, TrainConfig
from samstream.train.setup import build_trainable
from samstream.train.trainer import train


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """A SAM3 model folder (the built-in tiny model saved in transformers format), like a user's checkpoint."""
    folder = tmp_path_factory.mktemp("base") / "sam3"
    model, tokenizer = build_tiny_model()
    save_segmenter_model(model, tokenizer, folder)
    return folder


def config(tmp_path, **kw) -> TrainConfig:
    defaults = dict(out=str(tmp_path / "run"), batch_pairs=1, warmup_steps=1, log_every=1, checkpoint_every=2,
                    validation_samples=4, birth_calibration_videos=0,
                    spatial_calibration_images=0, device="cpu", stages=[Stage(steps=2)])
    defaults.update(kw)
    return TrainConfig(**defaults)


def weights(folder):
    return load_file(folder / "model.safetensors")


def test_adapters_only_leaves_every_base_weight_bit_identical(base_folder, tmp_path):
    folder = train(config(tmp_path, model=str(base_folder), mode="adapters", train_tracker=False), progress=False)
    before, after = weights(base_folder), weights(folder)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model, _ = build_tiny_model()
    fresh = Sam3IAdapters.fresh(model.detector_model).state_dict()
    trained = load_file(folder / ADAPTERS_FILE)
    changed = [k for k in fresh if not torch.equal(fresh[k], trained[k])]
    assert any("text." in k for k in changed) and any("decoder." in k for k in changed)
    log = [json.loads(line) for line in (tmp_path / "run/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] > 0 for r in log)


def test_lora_trains_only_low_rank_deltas_and_exports_merged_weights(base_folder, tmp_path):
    folder = train(config(tmp_path, model=str(base_folder), mode="lora", lora_rank=4, train_tracker=False),
                   progress=False)
    checkpoint = load_file(tmp_path / "run/checkpoints/step-0000002/trainable.safetensors")
    assert checkpoint and all("lora_" in k for k in checkpoint)
    before, after = weights(base_folder), weights(folder)
    assert before.keys() == after.keys()  # merged: plain transformers keys, no lora_ leftovers
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"))
                           for k in changed)
    assert load_segmenter(str(folder), device="cpu").info.trained


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    cfg = config(tmp_path, model="tiny", tokenizer_scenes=30, stages=[Stage(steps=2)], checkpoint_every=1,
                 birth_calibration_videos=1, birth_calibration_frames=6, box_crop_margins=[0.05],
                 spatial_calibration_images=6)
    train(cfg, progress=False)
    first = load_file(tmp_path / "run/checkpoints/step-0000002/trainable.safetensors")
    longer = cfg.model_copy(update={"stages": [Stage(steps=4)]})
    folder = train(longer, progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run/train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # 3 and 4 continue the run; 1 and 2 are not redone
    optimizer = load_file(tmp_path / "run/checkpoints/step-0000004/optimizer.safetensors")
    assert any(k.endswith("::exp_avg") for k in optimizer)
    last = load_file(tmp_path / "run/checkpoints/step-0000004/trainable.safetensors")
    assert first.keys() == last.keys() and any(not torch.equal(first[k], last[k]) for k in first)
    meta = json.loads((folder / "samstream.json").read_text())
    segmenter = load_segmenter(str(folder), device="cpu")
    assert segmenter.info.score_threshold == meta["score_threshold"]
    assert segmenter.info.birth_threshold == meta["birth_threshold"] >= meta["score_threshold"]
    assert meta["calibration"]["by_threshold"] and meta["training"]["model"] == "tiny"
    assert meta["calibration"]["negative_share"] == 0.25 and meta["calibration"]["positives"] > 0
    birth = meta["calibration"]["birth"]  # chosen by tracking a generated clip at each candidate bar
    assert birth["birth_threshold"] == meta["birth_threshold"]
    assert list(birth["by_birth_threshold"]) == [f"{bar:g}" for bar in birth_candidates(meta["score_threshold"])]
    assert list(birth["by_box_crop_margin"]) == ["none", "0.05"]  # uncropped and cropped masks, both tracked
    assert meta.get("box_crop_margin") == birth["box_crop_margin"] == segmenter.info.box_crop_margin
    gates = meta["calibration"]["by_presence_threshold"]  # the presence gate is chosen with the score bar
    assert list(gates) == ["0", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    assert meta.get("presence_threshold") == meta["calibration"]["presence_threshold"] == segmenter.info.presence_threshold
    reliance = meta["calibration"]["text_reliance"]
    assert reliance["samples"] >= 2 and 0 <= reliance["top_query_iou_other_text"] <= 1
    instances = meta["calibration"]["instances"]  # are the queries instances, or copies of one mask?
    assert instances["frames"] >= 2 and 0 <= instances["best_query_iou_per_object"] <= 1
    spatial = meta["calibration"]["spatial_rules"]  # "the leftmost X" by rule or by the model: the better on images
    assert spatial["images"]["count"] == 6 and spatial["simple_samples"] > 0
    assert meta["spatial_rules"] == spatial["spatial_rules"] == segmenter.info.spatial_rules
    assert spatial["spatial_rules"] == (spatial["simple_giou"]["on"] > spatial["simple_giou"]["off"])


def test_small_fine_sizes_train_and_track(tmp_path):
    """The finer-grid size: a 16x16 grid at 128 px, masks at 64x64, 64 wide; a step with the tracker, and the
    exported model tracks across frames (the tracker at width 64 runs past the second frame)."""
    from samstream.data.world import make_scene, render
    from samstream.tracker.session import TrackerConfig, TrackingSession

    cfg = config(tmp_path, model="small-fine", tokenizer_scenes=20, stages=[Stage(steps=1)], validation_samples=0)
    assert build_trainable(cfg, torch.device("cpu")).mask_size == 64
    folder = train(cfg, progress=False)
    segmenter = load_segmenter(str(folder), device="cpu")
    detector = segmenter.model.config.detector_config
    assert segmenter.info.image_size == 128 and detector.vision_config.backbone_config.patch_size == 8
    assert detector.vision_config.fpn_hidden_size == 64 == segmenter.model.config.tracker_config.memory_attention_hidden_size
    session = TrackingSession(segmenter, ["a circle"], TrackerConfig(keyframe_every=3, birth_threshold=0.0))
    scene = make_scene(3, 5)
    shapes = [session.update(render(scene, t, 96, 96)[0]).masks.shape[1:] for t in range(5)]
    assert shapes == [(96, 96)] * 5


def test_training_on_unreadable_images_fails_with_one_line(tmp_path):
    synthesize(tmp_path / "coco", images=2, width=64, height=64, seed=3, progress=False)
    for image in (tmp_path / "coco/images").iterdir():
        image.unlink()  # the annotations name images that are gone
    config = tmp_path / "run.toml"
    config.write_text(f'model = "tiny"\ndata = "{tmp_path / "coco/images.json"}"\nout = "{tmp_path / "run"}"\n'
                      "tokenizer_scenes = 30\nbatch_pairs = 1\n[[stages]]\nsteps = 2\n")
    done = subprocess.run([sys.executable, "-m", "samstream", "train", str(config)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "cannot read image" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run/model").exists()  # nothing exported from a failed run


def test_full_training_on_a_coco_dataset(tmp_path):
    synthesize(tmp_path / "coco", images=4, width=64, height=64, seed=3, progress=False)
    cfg = config(tmp_path, model="tiny", tokenizer_scenes=30, data=str(tmp_path / "coco/images.json"))
    folder = train(cfg, progress=False)
    assert (folder / "model.safetensors").exists() and (folder / ADAPTERS_FILE).exists()
    log = [json.loads(line) for line in (tmp_path / "run/train_log.jsonl").read_text().splitlines()]
    assert "track_mask" not in log[0]  # still images: no tracker pairs


def test_cli_trains_and_rejects_bad_configs(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(f'model = "tiny"\ntokenizer_scenes = 20\nbatch_pairs = 1\nwarmup_steps = 1\n'
                    f'validation_samples = 2\nbirth_calibration_videos = 0\nspatial_calibration_images = 0\nout = "{tmp_path / "cli"}"\nnegative_queries = true\n'
                    f'text_init = "identity"\ninstructions_per_frame = 2\n'
                    f'[loss_weights]\ncls = 4.0\nalign = 1.0\n[[stages]]\nsteps = 1\nfreeze = ["adapters.text"]\n')
    cli = [sys.executable, "-m", "samstream", "train"]
    done = subprocess.run([*cli, str(good), "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "model written to" in done.stdout and (tmp_path / "cli/model/config.json").exists()
    recorded = json.loads((tmp_path / "cli/config.json").read_text())
    assert recorded["negative_queries"] is True and recorded["loss_weights"]["cls"] == 4.0
    assert recorded["text_init"] == "identity" and recorded["instructions_per_frame"] == 2
    assert recorded["loss_weights"]["align"] == 1.0 and recorded["stages"][0]["freeze"] == ["adapters.text"]
    assert "align" in json.loads((tmp_path / "cli/train_log.jsonl").read_text().splitlines()[0])
    assert recorded["loss_weights"]["dice"] == 5.0  # unset weights keep SAM3's
    bad = tmp_path / "bad.toml"
    for text, message in [('mode = "magic"', "mode"), ("lr = -1", "lr"), ("colour = 3", "colour"),
                          ("steps = [", "not valid TOML"), ("[loss_weights]\nclss = 1", "loss_weights.clss"),
                          ("[loss_weights]\ncls = -1", "loss_weights.cls"), ('text_init = "bert"', "text_init"),
                          ("box_crop_margins = [0.9]", "box_crop_margins"),
                          (f'model = "tiny"\ntokenizer_scenes = 20\nout = "{tmp_path / "bad"}"\n[[stages]]\nsteps = 1\n'
                           f'freeze = ["nothing"]', "'nothing'")]:
        bad.write_text(text + "\n")
        done = subprocess.run([*cli, str(bad)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    done = subprocess.run([*cli, str(tmp_path / "missing.toml")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "missing.toml" in done.stderr


def test_ddp_with_torchrun_on_cpu(tmp_path):
    """Two processes (gloo) train one model with DDP (averaged gradients); rank 0 alone logs and saves."""
    cfg = tmp_path / "ddp.toml"
    cfg.write_text(f'model = "tiny"\ntokenizer_scenes = 20\nbatch_pairs = 1\nwarmup_steps = 1\nlog_every = 1\n'
                   f'validation_samples = 2\nbirth_calibration_videos = 0\nspatial_calibration_images = 0\ntrain_tracker = false\nout = "{tmp_path / "ddp"}"\n[[stages]]\nsteps = 2\n')
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           "29517", "-m", "samstream", "train", str(cfg), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "ddp/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # one log (rank 0), not two
    assert (tmp_path / "ddp/model/model.safetensors").exists()


def test_gradient_checkpointing_gives_the_same_gradients():
    from samstream.train.forward import TrainModule
    from samstream.train.setup import enable_gradient_checkpointing
    from samstream.train.world_batches import WorldBatches

    grads = []
    for checkpointing in (False, True):
        model, tokenizer = build_tiny_model()
        if checkpointing:
            assert enable_gradient_checkpointing(model) > 0
        torch.manual_seed(0)
        module = TrainModule(model, Sam3IAdapters.fresh(model.detector_model), tokenizer).train()
        batch = WorldBatches(112, 32, seed=4).sample(2)
        module(batch)["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 100
    worst = max((grads[0][n] - grads[1][n]).abs().max().item() / (grads[0][n].abs().max().item() + 1e-8)
                for n in grads[0])
    assert worst < 1e-3


@pytest.mark.parametrize("path", sorted(str(p) for p in (Path(__file__).parents[2] / "configs").glob("*.toml")))
def test_every_committed_config_is_valid(path):
    from samstream.model.loader import BUILTIN_SMALL
    from samstream.train.config import load_config
    from samstream.train.setup import NEW_MODEL_SIZES

    config = load_config(path)
    # a new model, the shipped one, or the output of another committed config (a fine-tuning step of a recipe)
    starts = set(NEW_MODEL_SIZES) | {BUILTIN_SMALL}
    outputs = {f"{load_config(other).out}/model" for other in Path(path).parent.glob("*.toml")}
    assert config.total_steps > 0 and (config.model in starts or config.model in outputs)


def test_a_detector_stage_then_a_tracker_stage_on_the_fixed_detector(tmp_path):
    stages = [Stage(name="detect", steps=2, train_tracker=False),
              Stage(name="track", steps=2, freeze=["detector_model", "adapters"], train_tracker=True,
                    own_schedule=True)]
    run = config(tmp_path, model="tiny", tokenizer_scenes=30, lr=1e-3, warmup_steps=2, stages=stages)
    train(run, progress=False)
    detected, tracked = (load_file(tmp_path / f"run/checkpoints/step-000000{n}/trainable.safetensors") for n in (2, 4))
    tracker = [k for k in detected if k.startswith(("model.tracker_model.", "model.tracker_neck."))]
    detector = [k for k in detected if k.startswith(("model.detector_model.", "adapters."))]
    assert tracker and detector
    assert all(torch.equal(detected[k], tracked[k]) for k in detector)  # the tracker stage holds the detector
    assert any(not torch.equal(detected[k], tracked[k]) for k in tracker)
    log = [json.loads(line) for line in (tmp_path / "run/train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["detect", "detect", "track", "track"]
    assert not any("track_mask" in r for r in log[:2]) and all("track_mask" in r for r in log[2:])
    assert all("dice" in r for r in log[:2]) and not any("dice" in r for r in log[2:])  # no detector decoding
    assert [r["lr"] for r in log] == pytest.approx([5e-4, 1e-3, 5e-4, 1e-3])  # the tracker stage warms up again


def test_the_tracker_has_no_gradient_in_a_detector_stage(tmp_path):
    stages = [Stage(name="detect", steps=2, train_tracker=False)]
    run = config(tmp_path, model="tiny", tokenizer_scenes=30, stages=stages)
    start = {f"model.{k}": v.clone() for k, v in build_trainable(run, torch.device("cpu")).model.state_dict().items()}
    train(run, progress=False)
    after = load_file(tmp_path / "run/checkpoints/step-0000002/trainable.safetensors")
    tracker = [k for k in after if k.startswith("model.tracker_model.mask_decoder.")]
    assert tracker and all(torch.equal(after[k], start[k]) for k in tracker)
    assert any(not torch.equal(after[k], start[k]) for k in after if k.startswith("model.detector_model.detr_"))


@pytest.mark.parametrize("data", ["world without the tracker", "coco"])
def test_a_stage_that_freezes_the_detector_without_the_tracker_is_a_config_error(tmp_path, data):
    held = Stage(steps=1, freeze=["detector_model", "adapters"], train_tracker=data == "coco")
    extra = {}
    if data == "coco":  # still images: nothing for the tracker to learn from
        synthesize(tmp_path / "coco", images=2, width=64, height=64, seed=3, progress=False)
        extra = {"data": str(tmp_path / "coco/images.json")}
    run = config(tmp_path, model="tiny", tokenizer_scenes=30, stages=[held], **extra)
    with pytest.raises(ConfigError, match="does not train the tracker"):
        train(run, progress=False)


def test_a_stage_that_freezes_everything_is_a_config_error(tmp_path):
    run = config(tmp_path, model="tiny", tokenizer_scenes=30,
                 stages=[Stage(steps=1, freeze=["detector_model", "tracker_model", "tracker_neck", "adapters"])])
    with pytest.raises(ConfigError, match="every trained parameter"):
        train(run, progress=False)


def test_learning_rate_schedule_spans_shared_stages_and_restarts_for_its_own():
    from samstream.train.trainer import lr_at

    run = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1,
                      stages=[Stage(steps=100), Stage(steps=50), Stage(steps=40, own_schedule=True)])
    assert lr_at(9, run) == pytest.approx(1e-3)
    assert lr_at(149, run) == pytest.approx(1e-4, rel=0.01)  # the shared decay ends where the shared stages end
    assert lr_at(150, run) == pytest.approx(1e-4)  # own warmup: 1/10 of the peak
    assert lr_at(159, run) == pytest.approx(1e-3)
    assert lr_at(189, run) == pytest.approx(1e-4, rel=0.05)


def test_a_stage_can_scale_its_learning_rate():
    from samstream.train.trainer import lr_at

    run = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1,
                      stages=[Stage(steps=100), Stage(steps=40, own_schedule=True, lr_scale=0.4)])
    assert lr_at(9, run) == pytest.approx(1e-3)
    assert lr_at(109, run) == pytest.approx(4e-4)  # its own warmup reaches 0.4 x the peak
    assert lr_at(139, run) == pytest.approx(4e-5, rel=0.05)  # ...and decays to 0.4 x the floor


def test_a_stage_draws_its_own_share_of_negatives():
    from types import SimpleNamespace

    from samstream.train.trainer import stage_batches

    run = TrainConfig(negative_rate=0.0, stages=[Stage(steps=1), Stage(steps=1, negative_rate=0.8)])
    sizes = SimpleNamespace(image_size=64, mask_size=16)
    negatives = [sum(len(t.masks) == 0 for t in stage_batches(run, sizes, index, 0).sample(40).targets) / 80
                 for index in (0, 1)]
    assert negatives[0] < 0.2 < 0.6 < negatives[1]  # (a frame with nothing in view is a negative too)


def test_contrast_pairs_ask_one_frame_two_instructions_one_word_apart():
    from types import SimpleNamespace

    from samstream.data.world import COLOURS
    from samstream.train.trainer import stage_batches

    sizes = SimpleNamespace(image_size=64, mask_size=16)
    run = TrainConfig(instructions_per_frame=2, contrast_rate=1.0, stages=[Stage(steps=1)])
    batch = stage_batches(run, sizes, 0, 0).sample(12)
    assert batch.frames == [row for row in range(24) for _ in range(2)]  # two instructions per frame, in pixel order
    pairs = [batch.texts[i:i + 2] for i in range(0, len(batch.texts), 2)]
    one_word = [len(x.split()) == len(y.split()) and sum(a != b for a, b in zip(x.split(), y.split())) == 1
                for x, y in pairs]
    assert sum(one_word) >= 20  # every frame with a coloured object in view
    assert any(len(batch.targets[i + 1].masks) == 0 for i in range(0, 48, 2))  # some swaps name nothing present
    colours = TrainConfig(instructions_per_frame=2, contrast_rate=1.0, contrast_shape_share=0.0, stages=[Stage(steps=1)])
    texts = stage_batches(colours, sizes, 0, 0).sample(12).texts
    differ = [[{a, b} for a, b in zip(x.split(), y.split()) if a != b] for x, y in zip(texts[::2], texts[1::2])
              if len(x.split()) == len(y.split())]
    swapped = [words[0] for words in differ if len(words) == 1]  # the contrast pairs (a frame with nothing coloured
    assert len(swapped) >= 20 and all(words <= set(COLOURS) for words in swapped)  # in view gets two others)
    validation = stage_batches(run, sizes, 0, 0, split="heldout").sample(4)
    assert validation.frames is None  # validation asks one instruction per frame, as in use
    with pytest.raises(ValueError, match="instructions_per_frame >= 2"):
        TrainConfig(contrast_rate=0.5)


def test_palette_scenes_share_colours_in_training_and_validation_keeps_the_usual_scenes():
    from types import SimpleNamespace

    from samstream.train.trainer import stage_batches

    sizes = SimpleNamespace(image_size=64, mask_size=16)

    def colours_per_frame(run: TrainConfig) -> list[int]:
        labels = stage_batches(run, sizes, 0, 0).sample(24).dense_labels
        present = labels["colour"][:, 1:].flatten(2).amax(-1) > 0  # (frames, colours): any pixel of that colour
        return present.sum(-1).tolist()

    dense = {"loss_weights": {"dense": 1.0}, "stages": [Stage(steps=1)]}
    shared = colours_per_frame(TrainConfig(palette_rate=1.0, **dense))
    free = colours_per_frame(TrainConfig(palette_rate=0.0, **dense))
    assert max(shared) <= 2 and max(free) >= 4
    assert stage_batches(TrainConfig(palette_rate=1.0, **dense), sizes, 0, 0, split="heldout").palette_rate == 0.0
    with pytest.raises(ValueError, match="palette_rate"):
        TrainConfig(data="annotations.json", palette_rate=0.5)


def test_a_stage_can_turn_negative_query_scores_off_and_the_next_inherits_them(tmp_path):
    stages = [Stage(name="presence only", steps=2, train_tracker=False, negative_queries=False),
              Stage(name="scores too", steps=2, train_tracker=False)]
    run = config(tmp_path, model="tiny", tokenizer_scenes=30, negative_rate=0.95, negative_queries=True,
                 stages=stages)
    train(run, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run/train_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["presence only"] * 2 + ["scores too"] * 2
    assert all(r["cls"] == 0 for r in log[:2])  # only negatives, and they teach no query score here
    assert all(r["cls"] > 0 for r in log[2:])


def test_bf16_training_on_a_cpu_with_native_bf16(tmp_path):
    """`precision = "bf16"` autocasts the forward on a CPU with AVX512-BF16 / AMX (model/precision.py); the losses
    stay in fp32 and start where fp32's do, the weights stay fp32. A CPU without native bf16 refuses the config."""
    from samstream.model.precision import cpu_has_native_bf16

    stages = [Stage(steps=2, train_tracker=True)]
    bf16 = config(tmp_path / "bf16", model="tiny", tokenizer_scenes=20, stages=stages, validation_samples=0,
                  precision="bf16", batch_pairs=2)
    if not cpu_has_native_bf16():
        with pytest.raises(ConfigError, match="this CPU has no native bf16"):
            train(bf16, progress=False)
        return
    fp32 = bf16.model_copy(update={"precision": "fp32", "out": str(tmp_path / "fp32" / "run")})
    logs = {}
    for cfg in (fp32, bf16):
        folder = train(cfg, progress=False)
        logs[cfg.precision] = [json.loads(line) for line in (Path(cfg.out) / "train_log.jsonl").read_text().splitlines()]
        assert all(v.dtype == torch.float32 for v in load_file(folder / "model.safetensors").values())
    first = {precision: rows[0] for precision, rows in logs.items()}
    for term in ("loss", "cls", "dice", "track_mask"):
        assert torch.isfinite(torch.tensor([row[term] for row in logs["bf16"]])).all()
        assert abs(first["bf16"][term] - first["fp32"][term]) <= 0.05 * abs(first["fp32"][term]) + 1e-3, term
    # a stage may run in fp32 inside a bf16 run (a tracker stage: session 35): it computes exactly as fp32 does
    mixed = bf16.model_copy(update={"stages": [Stage(steps=2, train_tracker=True, precision="fp32")],
                                    "out": str(tmp_path / "mixed" / "run")})
    train(mixed, progress=False)
    row = json.loads((Path(mixed.out) / "train_log.jsonl").read_text().splitlines()[0])
    assert row["loss"] == pytest.approx(first["fp32"]["loss"], rel=1e-5)
    assert row["loss"] != first["bf16"]["loss"]


def test_cli_exports_an_earlier_checkpoint_beside_the_run_model(tmp_path):
    """`--export-only --checkpoint N` writes <out>/model-step-N from that step's weights and leaves <out>/model."""
    toml = tmp_path / "run.toml"
    toml.write_text(f'model = "tiny"\ntokenizer_scenes = 20\nbatch_pairs = 1\nwarmup_steps = 1\ncheckpoint_every = 1\n'
                    f'validation_samples = 0\nbirth_calibration_videos = 0\nspatial_calibration_images = 0\n'
                    f'out = "{tmp_path / "run"}"\n[[stages]]\nsteps = 3\n')
    cli = [sys.executable, "-m", "samstream", "train", str(toml), "--quiet"]
    assert subprocess.run(cli, capture_output=True, text=True, timeout=600).returncode == 0
    final = weights(tmp_path / "run/model")
    done = subprocess.run([*cli, "--export-only", "--checkpoint", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "model-step-0000002" in done.stdout
    earlier = weights(tmp_path / "run/model-step-0000002")
    assert any(not torch.equal(earlier[k], final[k]) for k in final)  # step 2's weights, not step 3's
    assert all(torch.equal(weights(tmp_path / "run/model")[k], final[k]) for k in final)  # the run's model kept
    done = subprocess.run([*cli, "--export-only", "--checkpoint", "3"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert all(torch.equal(weights(tmp_path / "run/model-step-0000003")[k], final[k]) for k in final)
    done = subprocess.run([*cli, "--export-only", "--checkpoint", "7"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "no checkpoint at step 7 (saved: 1..3, every 1)" in done.stderr
    done = subprocess.run([*cli, "--checkpoint", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "add --export-only" in done.stderr
    assert sorted(p.name for p in (tmp_path / "run").glob("model*")) == ["model", "model-step-0000002",
                                                                         "model-step-0000003"]
