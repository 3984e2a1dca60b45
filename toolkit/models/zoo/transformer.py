"""A token-sequence classifier on `torch.nn.TransformerEncoder` (post-norm, as torch builds it).

Shaped like a keyword transformer: a sequence of 49 frames × 10 features (an MFCC map read as
tokens) is projected to `d_model`, given a learned position embedding, run through
`nn.TransformerEncoder` layers (self-attention with `nhead` heads, ReLU MLP), mean-pooled
over tokens, normalised and classified. Not a published model: it is the stock torch encoder
that users build, kept here so compression is tested on `nn.MultiheadAttention` itself.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (1, 49, 10)


class TransformerEncoderClassifier(nn.Module):
    """Linear embedding → position embedding → `nn.TransformerEncoder` → mean pool → LN → linear.

    Args:
        num_classes: classifier outputs. Default 10.
        width: multiplier on `d_model` (64) and the feed-forward size (128); heads stay 4, so the
            head size scales. Default 1.0.
        num_layers: encoder layers. Default 2.
        nhead: attention heads. Default 4.
        input_shape: (batch, tokens, features per token). Default (1, 49, 10).
        dropout: dropout inside the encoder layers. Default 0.1.
    """

    def __init__(
        self, num_classes: int = 10, width: float = 1.0, num_layers: int = 2, nhead: int = 4,
        input_shape: tuple[int, int, int] = INPUT_SHAPE, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        _, tokens, features = input_shape
        d_model = nhead * max(1, int(round(64 * width / nhead)))
        self.embed = nn.Linear(features, d_model)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, d_model))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=max(1, int(round(128 * width))), dropout=dropout,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.embed(x) + self.pos_embed)
        return self.head(self.norm(x.mean(dim=1)))


def transformer_encoder(num_classes: int = 10, width: float = 1.0) -> TransformerEncoderClassifier:
    """A 2-layer, 4-head `nn.TransformerEncoder` classifier over a 49×10 token sequence."""
    return TransformerEncoderClassifier(num_classes=num_classes, width=width)
