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
  """The transformer block every transformer of the codebase uses: multi-head
  self-attention and an MLP, each with a residual, over padded sequences (padded keys are
  masked out; padded positions come out as zeros).

  `norm='post'`: x = LN(x + MHA(x)); x = LN(x + FFN(x)) (Vaswani et al. 2017, PyTorch's
  default; the existing speech, contrastive and conversation models). `norm='pre'`:
  x = x + MHA(LN(x)); x = x + FFN(LN(x)) (ViT, MAE). With `attention_dropout` 0 the
  attention runs through `jax.nn.dot_product_attention` (a fused kernel where the platform
  has one); dropout on the attention weights (`attention_dropout`, default `dropout`)
  needs the explicit softmax. Parameter names are the same either way.
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.1
  causal: bool = False
  norm: str = 'post'  # post | pre
  activation: str = 'relu'  # relu | gelu
  attention_dropout: float | None = None  # None: `dropout`.
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    if self.norm not in ('pre', 'post'):
      raise ValueError(f'TransformerEncoderLayer.norm: unknown {self.norm!r} (pre | post)')
    dtype = jnp.dtype(self.dtype)
    keys = mask[:, None, None, :] > 0
    if self.causal:
      keys &= jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))[None, None]
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)  # noqa: E731
    attn_drop = self.dropout if self.attention_dropout is None else self.attention_dropout
    width = x.shape[-1]
    head = width // self.num_heads
    split = lambda y: y.reshape(*y.shape[:-1], self.num_heads, head)  # noqa: E731
    norm_1, norm_2 = nn.LayerNorm(name='norm_1', dtype=dtype), nn.LayerNorm(name='norm_2',
                                                                           dtype=dtype)
    y = norm_1(x) if self.norm == 'pre' else x
    q = split(dense(width, ('embed', 'heads'), name='query', dtype=dtype)(y))
    k = split(dense(width, ('embed', 'heads'), name='key', dtype=dtype)(y))
    v = split(dense(width, ('embed', 'heads'), name='value', dtype=dtype)(y))
    if attn_drop:
      scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(head).astype(q.dtype)
      probs = nn.Dropout(attn_drop, deterministic=not train)(masked_softmax(scores, keys))
      ctx = jnp.einsum('bhqk,bkhd->bqhd', probs, v)
    else:
      ctx = jax.nn.dot_product_attention(q, k, v, mask=keys)
    attn = dense(width, ('heads', 'embed'), name='attention_out', dtype=dtype)(
        ctx.reshape(*x.shape[:-1], width))
    act = {'relu': jax.nn.relu, 'gelu': jax.nn.gelu}[self.activation]
    if self.norm == 'post':
      x = norm_1(x + drop(attn))
      h = act(dense(self.mlp_dim, ('embed', 'mlp'), name='mlp_in', dtype=dtype)(x))
      h = dense(width, ('mlp', 'embed'), name='mlp_out', dtype=dtype)(drop(h))
      x = norm_2(x + drop(h))
    else:
      x = x + drop(attn)
      h = act(dense(self.mlp_dim, ('embed', 'mlp'), name='mlp_in', dtype=dtype)(norm_2(x)))
      x = x + drop(dense(width, ('mlp', 'embed'), name='mlp_out', dtype=dtype)(drop(h)))
    return x * mask[..., None].astype(x.dtype)


class TransformerEncoder(nn.Module):
  """A stack of `TransformerEncoderLayer`s (`layer_<i>`), with a final LayerNorm
  (`norm_out`) in the pre-norm form."""
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  norm: str = 'pre'
  activation: str = 'gelu'
  attention_dropout: float | None = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, mask, *, train: bool, return_hidden: bool = False):
    hidden = []
    for i in range(self.num_layers):
      x = TransformerEncoderLayer(self.num_heads, self.mlp_dim, self.dropout, norm=self.norm,
                                  activation=self.activation,
                                  attention_dropout=self.attention_dropout, dtype=self.dtype,
                                  name=f'layer_{i}')(x, mask, train=train)
      hidden.append(x)
    if self.norm == 'pre':
      x = nn.LayerNorm(name='norm_out', dtype=jnp.dtype(self.dtype))(x)
      x = x * mask[..., None].astype(x.dtype)
    return (x, hidden) if return_hidden else x
