"""The small models' BPE tokenizer: with `prefix_space` a word is one token wherever it stands."""

import torch
from transformers import AutoTokenizer

from samstream.model.tokenizer import build_bpe_tokenizer
from samstream.train.config import Stage, TrainConfig
from samstream.train.setup import build_trainable

CORPUS = ["hexagon", "the hexagon", "the red hexagon", "the thing that looks like a honeycomb cell",
          "something that looks like a wheel", "the circle left of the hexagon"]


def tokens(tokenizer, text: str) -> list[str]:
    return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])[1:-1]  # without BOS / EOS


def test_with_a_prefix_space_a_word_is_the_same_token_first_or_not():
    tokenizer = build_bpe_tokenizer(CORPUS, vocab_size=300, prefix_space=True)
    assert tokens(tokenizer, "hexagon") == tokens(tokenizer, "the hexagon")[1:]
    # "a" starts no instruction of the corpus; here it is still the token "like a ..." trained
    assert tokens(tokenizer, "a hexagon")[0] == tokens(tokenizer, "looks like a wheel")[2]


def test_without_it_a_first_word_is_another_token():
    tokenizer = build_bpe_tokenizer(CORPUS, vocab_size=300)
    assert tokens(tokenizer, "hexagon") != tokens(tokenizer, "the hexagon")[1:]
    assert tokens(tokenizer, "a hexagon")[0] != tokens(tokenizer, "looks like a wheel")[2]


def test_the_prefix_space_is_saved_with_the_tokenizer(tmp_path):
    tokenizer = build_bpe_tokenizer(CORPUS, vocab_size=300, prefix_space=True)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in ("hexagon", "a hexagon", "the red hexagon"):
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_the_config_option_reaches_a_new_model(tmp_path):
    config = TrainConfig(model="tiny", tokenizer_scenes=20, tokenizer_prefix_space=True, stages=[Stage(steps=1)],
                         out=str(tmp_path))
    tokenizer = build_trainable(config, torch.device("cpu")).tokenizer
    assert tokens(tokenizer, "circle") == tokens(tokenizer, "the circle")[1:]
