"""`cluster`: k-means weight sharing per layer (Deep Compression's second stage).

Each layer's weights are replaced by the nearest of k centroids found by 1-D k-means, so a
layer holds at most k distinct values and stores as k floats plus log2(k)-bit indices.
Weights that are exactly zero (pruned) stay zero and count as one of the k values. The
optional fine-tune keeps the sharing: after every step each cluster's weights are set to
their mean, which is the centroid moving by the cluster's average update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step
from toolkit.compress.layers import resolve_layers, weighted_layers
from toolkit.compress.params import check_known, integer, layer_names, number
from toolkit.compress.steps.finetune import finetune


@dataclass
class ClusterParams:
    clusters: int = 16
    layers: tuple[str, ...] = ()
    iterations: int = 30
    finetune_epochs: int = 0
    lr: float = 1e-4
    batch_size: int = 64


@register_step
class ClusterStep(CompressionStep):
    """Shares weights: each Conv/Linear weight tensor is snapped to k k-means centroids.

    Parameters:
        clusters: k, the number of distinct values per layer, 2-256 (default 16).
        layers: layer names to cluster (default: every Conv/Linear layer).
        iterations: k-means iterations (default 30; centroids start evenly spaced between the
            layer's min and max, the initialisation Deep Compression found best).
        finetune_epochs: epochs of training that keep the sharing (default 0, none).
        lr: learning rate of that training (default 0.0001).
        batch_size: its batch size (default 64).
    """

    key = "cluster"

    def validate(self, params: dict[str, Any]) -> ClusterParams:
        d = ClusterParams()
        check_known(self, params, ClusterParams)
        return ClusterParams(
            clusters=integer(self, params, "clusters", d.clusters, minimum=2, maximum=256),
            layers=layer_names(self, params, "layers"),
            iterations=integer(self, params, "iterations", d.iterations),
            finetune_epochs=integer(self, params, "finetune_epochs", d.finetune_epochs, minimum=0),
            lr=number(self, params, "lr", d.lr),
            batch_size=integer(self, params, "batch_size", d.batch_size),
        )

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[nn.Module, StepReport]:
        p = self.params
        layers = (
            resolve_layers(self, model, "layers", p.layers) if p.layers else weighted_layers(model)
        )
        if p.finetune_epochs and ctx.data is None:
            raise self.error("finetune_epochs", "a dataset to train on", p.finetune_epochs)
        assignments = {
            name: cluster_weight(layer.weight, p.clusters, p.iterations)
            for name, layer in layers.items()
        }
        if p.finetune_epochs:
            finetune(
                model,
                ctx.data,
                p.finetune_epochs,
                p.lr,
                p.batch_size,
                seed=ctx.seed,
                log=ctx.log,
                after_step=sharing_keeper(layers, assignments),
            )
        ctx.artifacts["clustered_layers"] = list(layers)
        unique = {name: int(layer.weight.unique().numel()) for name, layer in layers.items()}
        index_bits = math.ceil(math.log2(p.clusters))
        shared_bytes = sum(
            math.ceil(layer.weight.numel() * index_bits / 8) + 4 * unique[name]
            for name, layer in layers.items()
        )
        figures = {
            "clusters": p.clusters,
            "unique_values": unique,
            "index_bits": index_bits,
            "indexed_weight_bytes": shared_bytes,
            "fp32_weight_bytes": sum(4 * layer.weight.numel() for layer in layers.values()),
            "finetune_epochs": p.finetune_epochs,
        }
        ctx.log(f"cluster: {len(layers)} layers to <= {p.clusters} values each")
        return model, StepReport(self.key, figures)


@torch.no_grad()
def cluster_weight(weight: torch.Tensor, clusters: int, iterations: int = 30) -> torch.Tensor:
    """Snaps `weight` in place to at most `clusters` values; returns each element's cluster.

    Zeros stay exactly zero (cluster 0); the non-zero weights share `clusters - 1` centroids
    (all `clusters` when the tensor holds no zero).
    """
    flat = weight.detach().flatten()
    nonzero = flat != 0
    has_zero = bool((~nonzero).any())
    values = flat[nonzero]
    k = min(clusters - int(has_zero), int(values.unique().numel()))
    index = torch.zeros(flat.shape, dtype=torch.long)
    if k > 0:
        centroids = torch.linspace(float(values.min()), float(values.max()), k)
        for _ in range(iterations):
            member = _nearest(values, centroids)
            sums = torch.zeros(k).index_add_(0, member, values)
            counts = torch.bincount(member, minlength=k)
            moved = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
            if torch.equal(moved, centroids):
                break
            centroids = moved
        member = _nearest(values, centroids)
        flat[nonzero] = centroids[member]
        index[nonzero] = member + 1
    weight.copy_(flat.view_as(weight))
    return index.view_as(weight)


def sharing_keeper(
    layers: dict[str, nn.Module], assignments: dict[str, torch.Tensor]
) -> Callable[[nn.Module], None]:
    """Returns a training callback setting each cluster's weights to their mean (zeros stay 0)."""

    @torch.no_grad()
    def share(_: nn.Module) -> None:
        for name, layer in layers.items():
            index = assignments[name].flatten()
            flat = layer.weight.flatten()
            size = int(index.max()) + 1
            sums = torch.zeros(size).index_add_(0, index, flat)
            means = sums / torch.bincount(index, minlength=size).clamp(min=1)
            means[0] = 0.0  # cluster 0 holds the pruned zeros
            layer.weight.copy_(means[index].view_as(layer.weight))

    return share


def _nearest(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid for each value (centroids sorted ascending)."""
    centroids, order = torch.sort(centroids)
    bounds = (centroids[1:] + centroids[:-1]) / 2
    return order[torch.bucketize(values, bounds)]
