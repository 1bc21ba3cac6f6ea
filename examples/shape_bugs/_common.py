"""The small config every bug program starts from: d_model 16 (2 heads × 8), 32 tokens, 16 positions."""

import typedlm as tl

cfg = tl.CausalConfig(batch=2, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=64, layers=2)
