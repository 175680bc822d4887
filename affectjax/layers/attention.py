"""Self-attention blocks over padded sequences."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from affectjax.layers.dense import dense


def masked_softmax(scores: jax.Array, edges: jax.Array, axis: int = -1) -> jax.Array:
  """Softmax over the entries where `edges` is true; rows without edges give zeros."""
  scores = jnp.where(edges, scores, -jnp.inf)
  top = jnp.max(scores, axis=axis, keepdims=True)
  e = jnp.where(edges, jnp.exp(scores - jnp.where(jnp.isfinite(top), top, 0)), 0)
  return e / jnp.maximum(jnp.sum(e, axis=axis, keepdims=True), 1e-30)


class TransformerEncoderLayer(nn.Module):
  """Post-norm transformer encoder layer (Vaswani et al. 2017; PyTorch's default):
  x = LN(x + MHA(x)); x = LN(x + FFN(x)). Padded keys are masked out."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.1
  causal: bool = False

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    keys = mask[:, None, None, :] > 0
    if self.causal:
      keys &= jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))[None, None]
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)  # noqa: E731
    width = x.shape[-1]
    head = width // self.num_heads
    split = lambda y: y.reshape(*y.shape[:-1], self.num_heads, head)  # noqa: E731
    q = split(dense(width, ('embed', 'heads'), name='query')(x))
    k = split(dense(width, ('embed', 'heads'), name='key')(x))
    v = split(dense(width, ('embed', 'heads'), name='value')(x))
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(head).astype(x.dtype)
    probs = drop(masked_softmax(scores, keys))
    ctx = jnp.einsum('bhqk,bkhd->bqhd', probs, v).reshape(x.shape)
    attn = dense(width, ('heads', 'embed'), name='attention_out')(ctx)
    x = nn.LayerNorm(name='norm_1')(x + drop(attn))
    h = jax.nn.relu(dense(self.mlp_dim, ('embed', 'mlp'), name='mlp_in')(x))
    h = dense(x.shape[-1], ('mlp', 'embed'), name='mlp_out')(drop(h))
    x = nn.LayerNorm(name='norm_2')(x + drop(h))
    return x * mask[..., None].astype(x.dtype)
