"""Building what a training run trains: a new small model or a loaded checkpoint, its tokenizer and SAM3-I
adapters, with the parameters each mode trains (full, adapters only, LoRA via peft)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoTokenizer, Sam3VideoModel

from samstream.data.engine import objects_in_frame, world_generator
from samstream.data.world import make_scene, object_mask, render
from samstream.errors import ConfigError
from samstream.model.adapter_io import ADAPTERS_FILE, load_adapters
from samstream.model.extensions import install_extensions
from samstream.model.loader import load_sam3_video, local_folder
from samstream.model.queries import spread_queries
from samstream.model.sam3i import Sam3IAdapters
from samstream.model.tiny import SMALL_FINE, SMALL_STEM, SMALL_STEM_BOX, SMALL_STEM_RANK, SMALL_TRAINED, tiny_video_config
from samstream.model.tokenizer import build_bpe_tokenizer
from samstream.train.config import TrainConfig
from samstream.train.every_object import EVERY_OBJECT_PHRASES

NEW_MODEL_SIZES = {"small": SMALL_TRAINED, "small-fine": SMALL_FINE,  # small-fine: a 16x16 grid
                   "small-stem": SMALL_STEM,  # small-fine with a convolutional patch embedding
                   "small-stem-box": SMALL_STEM_BOX,  # small-stem with a box prior in its mask head
                   "small-stem-rank": SMALL_STEM_RANK,  # small-stem-box with a rank scorer of its query scores
                   # the built-in tiny sizes (fast; for tests)
                   "tiny": {}, "tiny-stem": {"conv_stem": (16,)},
                   "tiny-box": {"conv_stem": (16,), "box_prior": 8},
                   "tiny-rank": {"conv_stem": (16,), "box_prior": 8, "rank_scorer": 16}}
TOKENIZER_SCENES = 1500  # world scenes whose (training-template) instructions train the small model's BPE
TOKENIZER_VOCAB = 640
LORA_TARGETS = r".*(q_proj|v_proj|k_proj|o_proj)$"  # attention projections of every transformer block


@dataclass
class Trainable:
    model: Sam3VideoModel
    adapters: Sam3IAdapters
    tokenizer: object
    image_size: int
    mask_size: int


def instruction_corpus(scenes: int = TOKENIZER_SCENES, seed: int = 12345, extra: Sequence[str] = ()) -> list[str]:
    """Training-split instructions of `scenes` random world scenes (held-out templates excluded), and `extra`."""
    generator = world_generator()
    corpus: set[str] = set(extra)
    for i in range(scenes):
        scene = make_scene(seed + i, 1)
        _, visible = render(scene, 0, 96, 96)
        silhouettes = {o.id: object_mask(o, 0, 96, 96) for o in scene.objects}
        objects = objects_in_frame(scene, visible, silhouettes)
        corpus.update(inst.text for inst in generator.all_positive(objects, "train"))
        corpus.update(inst.text for inst in generator.all_negative(objects, "train"))
    return sorted(corpus)


def build_trainable(config: TrainConfig, device: torch.device) -> Trainable:
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    if config.model in NEW_MODEL_SIZES:
        extra = EVERY_OBJECT_PHRASES if any(config.every_object_rate_of(stage) > 0 for stage in config.stages) else ()
        tokenizer = build_bpe_tokenizer(instruction_corpus(config.tokenizer_scenes, extra=extra), TOKENIZER_VOCAB,
                                        prefix_space=config.tokenizer_prefix_space)
        model = Sam3VideoModel(tiny_video_config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                                 eos_token_id=tokenizer.eos_token_id, **NEW_MODEL_SIZES[config.model]))
        install_extensions(model)
        adapters = Sam3IAdapters.fresh(model.detector_model)
        if config.text_init == "identity":
            identity_text_start(model)
        if config.query_init == "spread":
            spread_queries(model.detector_model, torch.Generator().manual_seed(config.seed))
    else:
        if config.text_init == "clip":
            raise ConfigError(f"text_init = \"clip\" starts a new text encoder; {config.model} brings its own "
                              f"(drop text_init to keep it, or text_init = \"identity\" to restart it)")
        path = local_folder(config.model)
        source = str(path) if path.exists() else config.model
        try:  # fp32 whatever the stored dtype (the shipped model is stored in fp16)
            model = load_sam3_video(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load model {config.model}: {str(e).splitlines()[0][:200]}") from e
        bundled = path / ADAPTERS_FILE
        adapters = load_adapters(model.detector_model, str(bundled)) if bundled.is_file() else \
            Sam3IAdapters.fresh(model.detector_model)
        if config.text_init == "identity":  # restart the loaded text encoder; everything else stays as loaded
            identity_text_start(model)
    model.to(device)
    adapters.to(device)
    image_size = model.config.detector_config.vision_config.backbone_config.image_size
    mask_size = int(model.config.low_res_mask_size)
    _set_trainable(model, adapters, config)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return Trainable(model, adapters, tokenizer, image_size, mask_size)


def identity_text_start(model: Sam3VideoModel, embedding_std: float = 1.0) -> None:
    """Start a new text encoder as the identity on distinct token embeddings: embeddings drawn at std 1 (not
    CLIP's 0.02) and every block's attention and MLP output projections zeroed, so at step 0 each token's
    feature is its own embedding (normalised) and blocks grow their contribution as it pays. With CLIP's start
    the first block's output (norm ~15) drowns the token embedding (norm ~0.2) and a small model trained from
    scratch maps every instruction to nearly one vector (docs/model-card.md)."""
    text = model.detector_model.text_encoder.text_model
    with torch.no_grad():
        text.embeddings.token_embedding.weight.normal_(0.0, embedding_std)
        for layer in text.encoder.layers:
            for projection in (layer.self_attn.out_proj, layer.mlp.fc2):
                projection.weight.zero_()
                projection.bias.zero_()


def _set_trainable(model: Sam3VideoModel, adapters: Sam3IAdapters, config: TrainConfig) -> None:
    if config.mode == "full":
        for p in (*model.parameters(), *adapters.parameters()):
            p.requires_grad_(True)
        return
    for p in model.parameters():
        p.requires_grad_(False)
    if config.mode == "adapters":
        for p in adapters.parameters():
            p.requires_grad_(True)
        return
    # LoRA (peft) on the detector's attention projections; the SAM3-I adapters stay as loaded.
    from peft import LoraConfig, inject_adapter_in_model

    for p in adapters.parameters():
        p.requires_grad_(False)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=LORA_TARGETS, lora_dropout=0.0)
    inject_adapter_in_model(lora, model.detector_model)


def merge_lora(model: nn.Module) -> None:
    """Fold LoRA deltas into the base weights (exported models load with plain transformers)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())


def enable_gradient_checkpointing(model: Sam3VideoModel) -> int:
    """Recompute each ViT and text-encoder block in the backward pass instead of keeping its activations
    (transformers' SAM3 classes do not offer it). Patches the blocks' `forward`, so weight names are unchanged.
    Returns the number of blocks patched."""
    detector = model.detector_model
    blocks = [*detector.vision_encoder.backbone.layers, *detector.text_encoder.text_model.encoder.layers]
    for block in blocks:
        original = block.forward

        def forward(*args, _original=original, _block=block, **kwargs):
            if _block.training and torch.is_grad_enabled():
                return checkpoint(_original, *args, use_reentrant=False, **kwargs)
            return _original(*args, **kwargs)

        block.forward = forward
    return len(blocks)


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}
