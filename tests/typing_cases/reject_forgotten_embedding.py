"""A model meant to read token ids, built without its embedding: it takes Embedded, not TokenIds."""

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Logits, TokenIds

cfg = tl.CausalConfig(batch=2, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=32, layers=2)
model: Layer[TokenIds, Logits] = tl.models.causal_transformer_from_embeddings(cfg)  # E: assignment
