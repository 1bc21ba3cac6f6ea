"""A head before the blocks: its Out ("batch seq vocab") is not the blocks' In ("batch seq d_model")."""

import typedlm as tl

cfg = tl.CausalConfig(batch=2, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=32, layers=2)
model = tl.nn.TokenEmbedding(cfg) >> tl.nn.LMHead(cfg) >> tl.nn.TransformerBlock(cfg, index=0)  # E: operator
