"""The built-in tiny SAM3 configuration (detector + tracker), random weights from a fixed seed.

It exists so that samstream runs with no downloads; until the project ships trained small weights it
segments nothing meaningful, and `ModelInfo.trained` says so.
"""

from __future__ import annotations

import torch
from transformers import Sam3VideoConfig, Sam3VideoModel

from samstream.model.box_prior import set_box_prior
from samstream.model.conv_stem import set_conv_stem
from samstream.model.rank_scores import set_rank_scorer
from samstream.model.tokenizer import CONTEXT_LENGTH, build_byte_tokenizer

TINY_SEED = 0
TINY_IMAGE_SIZE = 112
TINY_PATCH_SIZE = 14
TINY_WIDTH = 128  # FPN = DETR = mask decoder = tracker width: > 64 and a multiple of the 64 memory channels
UNTRAINED_SCORE_THRESHOLD = 0.2  # random weights score ~0.25; SAM3's own default is 0.5
UNTRAINED_BIRTH_THRESHOLD = 0.24  # SAM3: 0.7


def tiny_video_config(image_size: int = TINY_IMAGE_SIZE, vocab_size: int = 258, width: int = TINY_WIDTH,
                      vit_width: int | None = None, vit_layers: int = 2, text_width: int = 64, text_layers: int = 2,
                      detr_layers: int = 2, queries: int = 16, patch_size: int = TINY_PATCH_SIZE, bos_token_id: int | None = None,
                      eos_token_id: int | None = None, conv_stem: tuple[int, ...] | None = None,
                      box_prior: int | None = None, rank_scorer: int | None = None) -> Sam3VideoConfig:
    """A small SAM3 video config (detector + tracker). Defaults: the built-in tiny model; `SMALL` below
    is a bigger point between it and full SAM3 for benchmarks. `conv_stem`: widths of a convolutional patch
    embedding (model/conv_stem.py); `box_prior`: the width of a box prior in the mask head (model/box_prior.py);
    `rank_scorer`: the width of a rank scorer of the query scores (model/rank_scores.py).
    `model.extensions.install_extensions` gives a model built from this config those parts."""
    d, grid = width, image_size // patch_size
    bos = vocab_size - 2 if bos_token_id is None else bos_token_id
    eos = vocab_size - 1 if eos_token_id is None else eos_token_id
    vit_width = vit_width or d
    vision = dict(
        backbone_config=dict(
            model_type="sam3_vit_model", hidden_size=vit_width, intermediate_size=4 * vit_width,
            num_hidden_layers=vit_layers, num_attention_heads=max(4, vit_width // 64), image_size=image_size,
            patch_size=patch_size, window_size=grid // 2, global_attn_indexes=[vit_layers - 1],
            pretrain_image_size=image_size,
        ),
        fpn_hidden_size=d,
        backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
        scale_factors=[4.0, 2.0, 1.0, 0.5],
    )
    detector = dict(
        vision_config=vision,
        text_config=dict(vocab_size=vocab_size, hidden_size=text_width, intermediate_size=2 * text_width,
                         projection_dim=text_width, num_hidden_layers=text_layers, num_attention_heads=4, max_position_embeddings=CONTEXT_LENGTH,
                         bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
        geometry_encoder_config=dict(hidden_size=d, num_layers=1, num_attention_heads=4, intermediate_size=2 * d),
        detr_encoder_config=dict(hidden_size=d, num_layers=detr_layers, num_attention_heads=4, intermediate_size=2 * d,
                                 dropout=0.0),
        detr_decoder_config=dict(hidden_size=d, num_layers=detr_layers, num_queries=queries, num_attention_heads=4,
                                 intermediate_size=2 * d, dropout=0.0),
        mask_decoder_config=dict(hidden_size=d, num_upsampling_stages=2, num_attention_heads=4),
    )
    tracker = dict(
        vision_config=vision, image_size=image_size,
        prompt_encoder_config=dict(hidden_size=d, image_size=image_size, patch_size=patch_size),
        mask_decoder_config=dict(hidden_size=d, mlp_dim=2 * d, num_hidden_layers=2, num_attention_heads=4,
                                 iou_head_hidden_dim=d),
        memory_attention_hidden_size=d, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=2 * d,
        memory_attention_dropout=0.0, memory_attention_rope_dropout=0.0, memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=d, memory_encoder_output_channels=64, mask_downsampler_embed_dim=d,
        memory_fuser_embed_dim=d, memory_fuser_intermediate_dim=2 * d,
    )
    config = Sam3VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * grid)
    if conv_stem:
        set_conv_stem(config, conv_stem)
    if box_prior:
        set_box_prior(config, box_prior)
    if rank_scorer:
        set_rank_scorer(config, rank_scorer)
    return config


# The shipped small model (trained by `samstream train configs/small.toml`): 112 px, patch 14 (an 8x8 grid, masks at
# 32x32), ViT 96x3, text 96x2, DETR 128x2 with 16 queries; the tracker at width 128.
SMALL_TRAINED = dict(image_size=112, patch_size=14, width=128, vit_width=96, vit_layers=3, text_width=96, text_layers=2,
                     detr_layers=2, queries=16)

# A finer grid for the next small model: 128 px, patch 8 (a 16x16 grid, masks at 64x64), everything 64 wide (the
# tracker's neck is built from the detector's vision config, so both share the width). The 8x8 grid of
# SMALL_TRAINED misses objects under ~11 px at 112 px (a quarter of the evaluation set's targets: IoU ~0.01;
# docs/model-card.md); at this width a detector step costs ~1.3x SMALL_TRAINED's, a tracker step ~1.25x.
SMALL_FINE = dict(image_size=128, patch_size=8, width=64, vit_width=96, vit_layers=3, text_width=96, text_layers=2,
                  detr_layers=2, queries=16)

# SMALL_FINE with a convolutional patch embedding (three stride-2 3x3 convolutions, 32/64/96 wide, then 1x1 to the
# ViT): the plain 3-layer ViT does not learn the world's shapes within the training budget, this one does
# (docs/model-card.md, "Session 18"); +66k parameters.
SMALL_STEM = dict(SMALL_FINE, conv_stem=(32, 64, 96))

# SMALL_STEM with a box prior in its mask head (model/box_prior.py): a query's mask may keep to its own box, where
# alike objects' alike pixel embeddings otherwise give every query all of them (docs/model-card.md, "Session 32");
# +130 parameters.
SMALL_STEM_BOX = dict(SMALL_STEM, box_prior=16)

# SMALL_STEM_BOX with a rank scorer of its query scores (model/rank_scores.py): the box prior separates the queries
# into instances, the scorer reads where each ranks among the others ("the leftmost circle"); +17k parameters.
SMALL_STEM_RANK = dict(SMALL_STEM_BOX, rank_scorer=32)

# Between tiny and full SAM3 (1008 px, ViT 1024x32, text 1024x24, DETR 256x6, 200 queries): for benchmarks.
SMALL = dict(image_size=336, width=256, vit_width=384, vit_layers=6, text_width=256, text_layers=4, detr_layers=3,
             queries=100)


def build_tiny_model(seed: int = TINY_SEED, image_size: int | None = None):
    """(Sam3VideoModel with random weights from `seed`, its tokenizer). Another `image_size` keeps the
    same weights (the ViT interpolates its position embeddings)."""
    tokenizer = build_byte_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3VideoModel(tiny_video_config(vocab_size=len(tokenizer)))
    if image_size is not None and image_size != TINY_IMAGE_SIZE:
        from samstream.model.loader import set_image_size

        config = set_image_size(model.config, image_size)
        resized = Sam3VideoModel(config)
        resized.load_state_dict(model.state_dict())
        model = resized
    return model.eval(), tokenizer
