"""Only Layer[S, S] may be stacked: a head among the blocks changes the shape."""

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded

cfg = tl.CausalConfig(batch=2, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=32, layers=2)
block = tl.nn.TransformerBlock(cfg, index=0)
stack: Layer[Embedded, Embedded] = tl.nn.Stack([block, tl.nn.LMHead(cfg)])  # E: list-item
