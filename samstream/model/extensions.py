"""samstream's own parts of small SAM3 models, beside transformers' classes: the convolutional stem
(model/conv_stem.py), the box prior of the mask head (model/box_prior.py) and the rank scorer of the query scores
(model/rank_scores.py). A model's config names the ones it has; these functions give a model built or loaded from
such a config its parts, with their trained tensors."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from transformers import Sam3VideoConfig, Sam3VideoModel
from transformers.utils import cached_file
from transformers.utils import logging as hf_logging

from samstream.model.box_prior import PRIOR_PREFIX, box_prior_width, install_box_prior
from samstream.model.conv_stem import STEM_PREFIX, conv_stem_widths, install_conv_stem
from samstream.model.rank_scores import RANKER_PREFIX, install_rank_scorer, rank_scorer_width

WEIGHTS_FILE = "model.safetensors"


def has_extensions(config: Sam3VideoConfig) -> bool:
    return bool(conv_stem_widths(config) or box_prior_width(config) or rank_scorer_width(config))


def install_extensions(model: Sam3VideoModel) -> None:
    """The parts the model's config names, freshly initialised (a no-op for SAM3's own configs)."""
    install_conv_stem(model)
    install_box_prior(model)
    install_rank_scorer(model)


def load_with_extensions(source: str, config: Sam3VideoConfig) -> Sam3VideoModel:
    """A model whose config names samstream parts, from a folder or hub id: transformers loads everything else,
    then each part's tensors are read from the same weights file (a file without them is an error, not a silently
    fresh part). fp32 whatever the stored dtype."""
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # it would warn that the parts' tensors are not SAM3's
    try:
        model = Sam3VideoModel.from_pretrained(source, config=config, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(previous)
    install_extensions(model)
    weights = load_file(cached_file(source, WEIGHTS_FILE))
    parts = [("conv stem", STEM_PREFIX, conv_stem_widths(config)), ("box prior", PRIOR_PREFIX, box_prior_width(config)),
             ("rank scorer", RANKER_PREFIX, rank_scorer_width(config))]
    named = dict(model.named_modules())
    for label, prefix, present in parts:
        if not present:
            continue
        module = named[prefix.rstrip(".")]
        state = {key.removeprefix(prefix): value for key, value in weights.items() if key.startswith(prefix)}
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{source}: its {label}'s weights do not match its config ({str(e).splitlines()[0]})") from None
    return model.float()
