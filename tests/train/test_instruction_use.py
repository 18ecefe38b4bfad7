"""What makes a model trained from scratch use its instruction: several instructions per frame, the
instruction-query alignment loss on the detector's own scores, and a text encoder that starts with words apart."""

import pytest
import torch
from safetensors.torch import load_file

from samstream.errors import ConfigError
from samstream.model.sam3i import Sam3IAdapters
from samstream.model.tiny import build_tiny_model
from samstream.model.tokenizer import CONTEXT_LENGTH
from samstream.train.config import TrainConfig
from samstream.train.forward import TrainModule, cross_scores, select_frames
from samstream.train.losses import LossWeights
from samstream.train.setup import build_trainable
from samstream.train.world_batches import WorldBatches


def test_each_frame_can_be_asked_several_different_instructions():
    single = WorldBatches(112, 32, seed=9).sample(3)
    assert single.frames is None and len(single.texts) == 6
    batch = WorldBatches(112, 32, seed=9, instructions_per_frame=3).sample(3)
    assert batch.pixels.shape[0] == 6 and len(batch.texts) == len(batch.targets) == len(batch.frames)
    assert sorted(set(batch.frames)) == list(range(6))
    for row in range(6):
        texts = [t for t, f in zip(batch.texts, batch.frames) if f == row]
        assert 1 <= len(texts) <= 3 and len(set(texts)) == len(texts)
    assert len(batch.texts) > 6  # the world almost always has more than one thing to say about a frame
    # one frame, different instructions, different targets: only the text can explain the difference
    first = [i for i, f in enumerate(batch.frames) if f == batch.frames[0]]
    assert len({len(batch.targets[i].masks) for i in first} | {batch.texts[i] for i in first}) > 1


def test_every_instruction_of_a_frame_splits_the_same_objects_into_targets_and_others():
    batch = WorldBatches(112, 32, seed=3, instructions_per_frame=3).sample(4)
    for row in set(batch.frames):
        asked = [t for t, f in zip(batch.targets, batch.frames) if f == row]
        counts = {len(t.masks) + len(t.others_masks) for t in asked}
        assert len(counts) == 1 and counts.pop() >= 1  # same frame, same objects, however they are named
        unions = [torch.cat([t.masks, t.others_masks]).amax(0) for t in asked]
        assert all(torch.equal(u, unions[0]) for u in unions)
        for t in asked:
            assert len(t.others_boxes) == len(t.others_masks)
            for target in t.masks:  # an object is a target or another object, never both
                assert not any(torch.equal(target, other) for other in t.others_masks)


def test_a_frame_asked_twice_is_encoded_once_with_the_same_features():
    model, tokenizer = build_tiny_model()
    detector = model.detector_model
    pixels = torch.randn(3, 3, 112, 112)
    rows = [0, 0, 1, 2, 2]
    with torch.no_grad():
        picked = select_frames(detector.get_vision_features(pixel_values=pixels), rows, 3)
        direct = detector.get_vision_features(pixel_values=pixels[rows])
    for a, b in zip((*picked.fpn_hidden_states, *picked.fpn_position_encoding),
                    (*direct.fpn_hidden_states, *direct.fpn_position_encoding)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_cross_scores_score_each_images_queries_against_every_instruction_as_the_detector_does():
    model, tokenizer = build_tiny_model()
    module = TrainModule(model, Sam3IAdapters.fresh(model.detector_model), tokenizer, LossWeights(align=1.0)).eval()
    detector = model.detector_model
    texts = ["circle", "the red square", "stars"]
    pixels = torch.randn(3, 3, 112, 112)
    seen = {}
    hook = detector.dot_product_scoring.register_forward_hook(lambda m, a, kw, out: seen.update(kw), with_kwargs=True)
    tokens = tokenizer(texts, padding="max_length", max_length=CONTEXT_LENGTH, return_tensors="pt")
    with torch.no_grad():
        vision = detector.get_vision_features(pixel_values=pixels)
        out = detector(vision_embeds=vision, input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        cross = cross_scores(detector.dot_product_scoring, **seen)
    hook.remove()
    assert cross.shape == (3, out.pred_logits.shape[1], 3)
    for i in range(3):
        assert torch.allclose(cross[i, :, i], out.pred_logits[i], atol=1e-4)
    assert not torch.allclose(cross[0, :, 0], cross[0, :, 2], atol=1e-3)  # the text does change the scores
    assert module.weights.align == 1.0


def _text_features(model, tokenizer, texts):
    tokens = tokenizer(texts, padding="max_length", max_length=CONTEXT_LENGTH, return_tensors="pt")
    with torch.no_grad():
        features = model.detector_model.get_text_features(input_ids=tokens.input_ids,
                                                          attention_mask=tokens.attention_mask).pooler_output
    return torch.nn.functional.normalize(features[:, 1], dim=-1)  # the word after BOS


@pytest.mark.parametrize("init", ["clip", "identity"])
def test_identity_text_start_keeps_words_apart(init):
    trainable = build_trainable(TrainConfig(model="tiny", tokenizer_scenes=60, text_init=init), torch.device("cpu"))
    words = ["circle", "square", "star", "hexagon"]
    features = _text_features(trainable.model, trainable.tokenizer, words)
    off_diagonal = (features @ features.T)[~torch.eye(len(words), dtype=torch.bool)]
    if init == "identity":
        assert off_diagonal.abs().max() < 0.6  # distinct random embeddings, nothing on top yet
        text = trainable.model.detector_model.text_encoder.text_model
        assert all(layer.mlp.fc2.weight.abs().sum() == 0 for layer in text.encoder.layers)
    else:
        assert off_diagonal.min() > 0.6  # CLIP's start: the first block's output swamps the word


def test_a_loaded_checkpoint_can_restart_its_text_encoder_and_train_around_a_frozen_rest(tmp_path):
    """A fine-tune that restarts a loaded checkpoint's text (stored in fp16, like the shipped model): the
    text encoder restarts with words apart, parts every stage holds fixed stay bit-identical (and cost no
    backward pass), the detector learns, and checkpoints keep the restarted text so a resume or export sees it."""

    from samstream.model.loader import save_segmenter_model
    from samstream.train.config import Stage
    from samstream.train.trainer import train

    model, tokenizer = build_tiny_model()
    save_segmenter_model(model, tokenizer, tmp_path / "sam3", dtype=torch.float16)
    base = load_file(tmp_path / "sam3/model.safetensors")
    held = ["detector_model.vision_encoder", "detector_model.text_encoder", "tracker_model", "tracker_neck"]
    config = TrainConfig(model=str(tmp_path / "sam3"), text_init="identity", out=str(tmp_path / "run"), batch_pairs=1,
                         warmup_steps=1, checkpoint_every=2, validation_samples=2, birth_calibration_videos=0,
                         spatial_calibration_images=0,
                         device="cpu", train_tracker=False,
                         stages=[Stage(steps=1, freeze=[*held, "adapters.text"]), Stage(steps=1, freeze=held)])
    trainable = build_trainable(config, torch.device("cpu"))
    assert all(p.dtype == torch.float32 for p in trainable.model.parameters())  # fp16 on disk, fp32 to train
    text = trainable.model.detector_model.text_encoder.text_model
    assert all(layer.mlp.fc2.weight.abs().sum() == 0 for layer in text.encoder.layers)
    restarted = text.embeddings.token_embedding.weight.detach().clone()
    assert not torch.equal(restarted, base["detector_model.text_encoder.text_model.embeddings.token_embedding.weight"].float())
    folder = train(config, progress=False)
    after = load_file(folder / "model.safetensors")
    fixed = [k for k in base if k.startswith(tuple(held))]
    assert fixed and all(torch.equal(after[k], base[k].float()) for k in fixed if ".text_encoder." not in k)
    assert torch.equal(after["detector_model.text_encoder.text_model.embeddings.token_embedding.weight"], restarted)
    assert any(not torch.equal(after[k], base[k].float()) for k in after if k.startswith("detector_model.detr_decoder."))
    checkpoint = load_file(tmp_path / "run/checkpoints/step-0000002/trainable.safetensors")
    assert "model.detector_model.text_encoder.text_model.embeddings.token_embedding.weight" in checkpoint
    with pytest.raises(ConfigError, match="text_init"):
        build_trainable(TrainConfig(model=str(tmp_path / "sam3"), text_init="clip"), torch.device("cpu"))


def test_the_shipped_model_is_a_training_base():
    from samstream.model.adapter_io import ADAPTERS_FILE
    from samstream.model.loader import SHIPPED_FOLDER

    trainable = build_trainable(TrainConfig(model="builtin:small", mode="adapters"), torch.device("cpu"))
    assert all(p.dtype == torch.float32 for p in trainable.model.parameters())
    assert not any(p.requires_grad for p in trainable.model.parameters())
    shipped = load_file(SHIPPED_FOLDER / ADAPTERS_FILE)
    loaded = trainable.adapters.state_dict()
    assert shipped.keys() == loaded.keys() and all(torch.equal(shipped[k].float(), loaded[k]) for k in shipped)


def test_a_stage_can_hold_the_text_encoder_fixed_and_the_next_trains_it(tmp_path):

    from samstream.train.config import Stage
    from samstream.train.trainer import train

    stages = [Stage(name="words-fixed", steps=2, freeze=["detector_model.text_encoder"]), Stage(name="all", steps=1)]
    config = TrainConfig(model="tiny", tokenizer_scenes=30, text_init="identity", out=str(tmp_path / "run"),
                         batch_pairs=1, warmup_steps=1, checkpoint_every=2, validation_samples=2,
                         birth_calibration_videos=0, spatial_calibration_images=0, device="cpu",
                         train_tracker=False, stages=stages)
    start = {f"model.{k}": v.clone() for k, v in build_trainable(config, torch.device("cpu")).model.state_dict().items()}
    train(config, progress=False)
    after_fixed = load_file(tmp_path / "run/checkpoints/step-0000002/trainable.safetensors")
    after_all = load_file(tmp_path / "run/checkpoints/step-0000003/trainable.safetensors")
    text = [k for k in after_fixed if ".text_encoder." in k]
    others = [k for k in after_fixed if k.startswith("model.detector_model.") and k not in text]
    assert text and all(torch.equal(after_fixed[k], start[k]) for k in text)
    assert any(not torch.equal(after_fixed[k], start[k]) for k in others)
    assert any(not torch.equal(after_all[k], start[k]) for k in text)


def test_freezing_a_part_that_does_not_exist_is_a_config_error(tmp_path):
    from samstream.train.config import Stage
    from samstream.train.trainer import train

    config = TrainConfig(model="tiny", tokenizer_scenes=30, out=str(tmp_path / "run"), batch_pairs=1, device="cpu",
                         stages=[Stage(steps=1, freeze=["detector_model.txt_encoder"])])
    with pytest.raises(ConfigError, match="txt_encoder"):
        train(config, progress=False)
