"""An offline tokenizer for the built-in small models: byte-level, no merges, CLIP's special tokens.

Real SAM3 checkpoints bring their own CLIP BPE tokenizer; this one needs no vocabulary file, so a model the
project makes can be saved and loaded with `save_pretrained` / `AutoTokenizer.from_pretrained` like any other.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 32  # SAM3's text context


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # 256 printable stand-ins for the bytes
    vocab = {token: i for i, token in enumerate(sorted(alphabet))}
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.normalizer = normalizers.Lowercase()  # CLIP lower-cases its input
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=EOS,
        model_max_length=CONTEXT_LENGTH, do_lower_case=True,
    )


def build_bpe_tokenizer(corpus: list[str], vocab_size: int = 512, prefix_space: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus` (instructions), CLIP's special tokens, lower-cased. Any
    text still encodes (bytes are the base alphabet); frequent words become one token, so SAM3's 32-token context
    holds whole instructions. Deterministic for the same corpus.

    `prefix_space`: a space before the text, so its first word is the same token as that word anywhere else, as
    in CLIP's word-level tokenizer. Without it "hexagon" and "the hexagon" name the shape with two tokens, and a
    word that starts no training instruction ("a hexagon") starts with a token training never saw."""
    from tokenizers import trainers

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(sorted(set(corpus)), trainer=trainer)
    bos, eos = core.token_to_id(BOS), core.token_to_id(EOS)
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=EOS,
        model_max_length=CONTEXT_LENGTH, do_lower_case=True,
    )
