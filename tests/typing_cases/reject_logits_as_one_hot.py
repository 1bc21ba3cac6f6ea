"""A head's logits fed to a one-hot embedding: the same dims ("batch seq vocab"), another meaning."""

import typedlm as tl

cfg = tl.CausalConfig(batch=2, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=32, layers=2)
model = tl.nn.LMHead(cfg) >> tl.nn.OneHotEmbedding(cfg)  # E: operator
