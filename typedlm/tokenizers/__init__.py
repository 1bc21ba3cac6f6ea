"""Tokenizers: GPT-2 BPE (identical to OpenAI's), bytes and characters, behind one `Tokenizer` protocol.

>>> from typedlm.tokenizers import GPT2BPE
>>> tok = GPT2BPE.from_vendored()          # or GPT2BPE.from_files("vocab.json", "merges.txt")
>>> tok.encode("Hello world<|endoftext|>", allowed_special="all")
[15496, 995, 50256]

`encode_corpus` turns a large text file into a cached uint16 array of ids using all cores;
`LocalVocab` / `LocalTokenizer` renumber GPT-2 ids compactly for small models.
"""

from typedlm.tokenizers.base import Tokenizer
from typedlm.tokenizers.bpe import GPT2BPE
from typedlm.tokenizers.bpe_files import gpt2_files
from typedlm.tokenizers.bytes import ByteTokenizer
from typedlm.tokenizers.chars import CharTokenizer
from typedlm.tokenizers.corpus_cache import default_cache_dir, encode_corpus
from typedlm.tokenizers.projection import OOV, LocalTokenizer, LocalVocab

__all__ = [
    "GPT2BPE",
    "OOV",
    "ByteTokenizer",
    "CharTokenizer",
    "LocalTokenizer",
    "LocalVocab",
    "Tokenizer",
    "default_cache_dir",
    "encode_corpus",
    "gpt2_files",
]
