"""Graph operations over padded dialogues, vectorised over the batch.

A batch of B dialogues padded to L utterances is a batch of dense graphs: edges are
(B, L, L) arrays indexed [b, target i, source j] (weights, 0 = no edge) with an
integer relation type per edge. Dialogue graphs are small (L <= ~110) and local, so
dense adjacency is both the simplest and the fastest layout on an accelerator: graph
construction is a few comparisons of index grids, and message passing is batched
matmuls, with no Python loop over utterances or edges and one compile per padded
length. Padded utterances have no edges, so they never send or receive messages.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from affectjax.layers.attention import masked_softmax
from affectjax.layers.dense import dense


def window_edges(mask: jax.Array, past: int, future: int) -> jax.Array:
  """(B, L, L) bool: j -> i when both are real and i - past <= j <= i + future.

  `past` / `future` < 0 mean the whole dialogue in that direction. Self-loops included.
  """
  length = mask.shape[1]
  i = jnp.arange(length)[:, None]
  j = jnp.arange(length)[None, :]
  ok = jnp.ones((length, length), bool)
  if past >= 0:
    ok &= j >= i - past
  if future >= 0:
    ok &= j <= i + future
  real = mask > 0
  return ok[None] & real[:, :, None] & real[:, None, :]


def relation_types(speaker: jax.Array, num_speakers: int) -> jax.Array:
  """(B, L, L) int: the DialogueGCN relation of edge j -> i.

  (speaker of j, speaker of i, direction) with direction 0 when j is at or before i
  (past, self) and 1 when j comes after i: 2 * num_speakers**2 relations.
  """
  src = speaker[:, None, :]
  dst = speaker[:, :, None]
  after = (jnp.arange(speaker.shape[1])[None, :] > jnp.arange(speaker.shape[1])[:, None])
  return (src * num_speakers + dst) * 2 + after[None].astype(speaker.dtype)


class RelationalGraphConv(nn.Module):
  """R-GCN (Schlichtkrull et al. 2018) with basis decomposition over dense edges.

  out_i = W_root h_i + b + sum_j w_ij / c_{i,r(ij)} W_{r(ij)} h_j, with
  W_r = sum_k a_{rk} V_k. `aggregation='sum'` uses c = 1 (DialogueGCN's weighted sum
  with edge attention as w); `'mean'` uses c = the number of r-typed edges into i
  (PyG's default, as in COGMEN).
  """
  features: int
  num_relations: int
  num_bases: int = 0  # 0: one full matrix per relation.
  aggregation: str = 'sum'

  @nn.compact
  def __call__(self, h, weights, relations):
    d = h.shape[-1]
    k = self.num_bases or self.num_relations
    bases = self.param('bases', nn.with_logical_partitioning(
        nn.initializers.lecun_normal(batch_axis=(0,)), (None, 'embed', 'hidden')),
        (k, d, self.features))
    eye = jnp.eye(self.num_relations, dtype=h.dtype)
    if self.num_bases:
      comp = self.param('comp', nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), (None, None)), (self.num_relations, k))
      if self.num_relations < k:  # Fewer relation matrices than bases: form W_r first,
        bases, comp = jnp.einsum('rk,kde->rde', comp, bases), eye  # (B, L, L, R) below.
    else:
      comp = eye
    coef = comp[relations] * weights[..., None]  # (B, L, L, min(K, R))
    if self.aggregation == 'mean':
      onehot = jax.nn.one_hot(relations, self.num_relations, dtype=h.dtype)
      counts = jnp.einsum('bijr,bij->bir', onehot, (weights != 0).astype(h.dtype))
      per_edge = jnp.take_along_axis(counts, relations, axis=2)  # c_{i, r(ij)}
      coef = coef / jnp.maximum(per_edge, 1)[..., None]
    elif self.aggregation != 'sum':
      raise ValueError(f'aggregation: {self.aggregation!r} (sum | mean)')
    projected = jnp.einsum('bjd,kde->bjke', h, bases)
    messages = jnp.einsum('bijk,bjke->bie', coef, projected)
    return messages + dense(self.features, name='root')(h)


class GraphConv(nn.Module):
  """GraphConv (Morris et al. 2019): W_1 h_i + W_2 sum_j w_ij h_j."""
  features: int

  @nn.compact
  def __call__(self, h, weights):
    neighbours = jnp.einsum('bij,bjd->bid', weights, h)
    return (dense(self.features, name='root')(h)
            + dense(self.features, name='neighbours', use_bias=False)(neighbours))


def normalized_adjacency(weights: jax.Array, mask: jax.Array) -> jax.Array:
  """D^-1/2 (A + I) D^-1/2 over real nodes (Kipf and Welling 2017); padding rows are 0."""
  eye = jnp.eye(weights.shape[-1], dtype=weights.dtype)[None] * mask[:, :, None]
  a = weights + eye
  deg = jnp.sum(a, axis=-1)
  inv = jnp.where(deg > 0, jax.lax.rsqrt(jnp.maximum(deg, 1e-12)), 0)
  return a * inv[:, :, None] * inv[:, None, :]


class GCNIIConv(nn.Module):
  """One deep-GCN layer with initial residual and identity mapping (Chen et al. 2020),
  the spectral convolution MMGCN stacks:
  h' = act(((1 - alpha) A h + alpha h0) ((1 - beta) I + beta W)), beta = log(lam / l + 1)."""
  layer: int  # 1-based depth, sets beta.
  alpha: float = 0.1
  lam: float = 0.5

  @nn.compact
  def __call__(self, h, h0, adjacency):
    beta = float(np.log(self.lam / self.layer + 1))
    support = (1 - self.alpha) * jnp.einsum('bij,bjd->bid', adjacency, h) + self.alpha * h0
    return (1 - beta) * support + beta * dense(h.shape[-1], ('embed', 'hidden'),
                                               use_bias=False, name='weight')(support)


class GraphTransformerConv(nn.Module):
  """Graph transformer convolution (Shi et al. 2021; PyG TransformerConv): multi-head
  attention of each node over its in-neighbours, plus a root (skip) projection."""
  features: int  # Per head.
  heads: int = 1
  dropout: float = 0.0

  @nn.compact
  def __call__(self, h, edges, *, train: bool):
    width = self.features * self.heads
    split = lambda y: y.reshape(*y.shape[:-1], self.heads, self.features)  # noqa: E731
    q = split(dense(width, ('embed', 'heads'), name='query')(h))
    k = split(dense(width, ('embed', 'heads'), name='key')(h))
    v = split(dense(width, ('embed', 'heads'), name='value')(h))
    scores = jnp.einsum('bihd,bjhd->bhij', q, k) / np.sqrt(self.features)
    attn = masked_softmax(scores, edges[:, None])
    attn = nn.Dropout(self.dropout, deterministic=not train)(attn)
    out = jnp.einsum('bhij,bjhd->bihd', attn, v).reshape(*h.shape[:-1], width)
    return out + dense(width, name='root')(h)


def cosine_edge_weights(x: jax.Array, edges: jax.Array) -> jax.Array:
  """MMGCN's edge weights 1 - arccos(cos(x_i, x_j)) / pi on the given edges."""
  unit = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
  cos = jnp.clip(jnp.einsum('bid,bjd->bij', unit, unit), -1 + 1e-6, 1 - 1e-6)
  return jnp.where(edges, 1 - jnp.arccos(cos) / np.pi, 0)
