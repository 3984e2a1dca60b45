"""ViT-Tiny (Dosovitskiy et al., 2021; the DeiT-Ti / timm `vit_tiny_patch16_224` size).

Patch embedding by a stride-`patch` conv, a class token and learned position embeddings,
`depth` pre-norm blocks (LayerNorm → multi-head self-attention → residual; LayerNorm → MLP
with GELU, 4× hidden → residual), a final LayerNorm and a linear head on the class token
(or on the mean of the patch tokens). Attention is written out (one qkv Linear, a per-head
reshape, softmax, one output projection) with `num_heads` and `head_dim` kept on the module,
so heads can be pruned as a whole. Embedding 192, depth 12, 3 heads: at 224×224, patch 16 and
1000 classes it has 5,717,416 parameters.
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention over (batch, tokens, dim).

    Attributes:
        num_heads: heads; a head pruner lowers it together with the qkv/proj channels.
        head_dim: channels per head; q, k and v each have `num_heads * head_dim` channels.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * num_heads * self.head_dim, bias=qkv_bias)
        self.proj = nn.Linear(num_heads * self.head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, tokens, head_dim)
        weights = torch.softmax((q * self.head_dim**-0.5) @ k.transpose(-2, -1), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear → GELU → Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT classifier.

    Args:
        num_classes: classifier outputs. Default 10.
        input_size: side of the square RGB input. Default 32 (224 is the published size).
        patch_size: side of a patch. Default 4 (16 is the published size).
        embed_dim: token width. Default 192 (ViT-Tiny).
        depth: blocks. Default 12.
        num_heads: attention heads. Default 3.
        mlp_ratio: MLP hidden size over `embed_dim`. Default 4.
        pool: `cls` (classify the class token, as published) or `mean` (mean of patch tokens,
            no class token).
    """

    def __init__(
        self, num_classes: int = 10, input_size: int = 32, patch_size: int = 4,
        embed_dim: int = 192, depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool: expected 'cls' or 'mean', got {pool!r}")
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} must be a multiple of patch {patch_size}")
        self.input_shape = (1, 3, input_size, input_size)
        self.pool = pool
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        tokens = (input_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, tokens + (1 if pool == "cls" else 0), embed_dim)
        )
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (batch, patches, dim)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0] if self.cls_token is not None else x.mean(dim=1))


def vit_tiny(num_classes: int = 10, input_size: int = 32, patch_size: int = 4,
             depth: int = 12, pool: str = "cls") -> VisionTransformer:
    """ViT-Tiny (192 wide, 3 heads) on 3×`input_size`×`input_size`, patches of `patch_size`."""
    return VisionTransformer(num_classes=num_classes, input_size=input_size,
                             patch_size=patch_size, depth=depth, pool=pool)
