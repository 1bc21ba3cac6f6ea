"""A one-hot embedding fed into a chain that starts from ids: OneHot is not TokenIds."""

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Logits, TokenIds

cfg = tl.CausalConfig(batch=2, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=32, layers=2)
head = tl.models.causal_transformer_from_embeddings(cfg)
model: Layer[TokenIds, Logits] = tl.nn.OneHotEmbedding(cfg) >> head  # E: assignment
