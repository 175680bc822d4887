"""Self-attention blocks over padded sequences."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from affectjax.layers.dense import dense


def masked_softmax(scores: jax.Array, edges: jax.Array, axis: int = -1) -> jax.Array:
  """Softmax over the entries where `edges` is true; rows without edges give zeros."""
  scores = jnp.where(edges, scores, -jnp.inf)
  top = jnp.max(scores, axis=axis, keepdims=True)
  e = jnp.where(edges, jnp.exp(scores - jnp.where(jnp.isfinite(top), top, 0)), 0)
  return e / jnp.maximum(jnp.sum(e, axis=axis, keepdims=True), 1e-30)


# jax.nn.dot_product_attention's fill for masked logits: a fully masked row attends
# uniformly, as there.
_MASKED = -0.7 * float(np.finfo(np.float32).max)


def _cpu_attention_forward(q, k, v, mask):
  scale = 1.0 / np.sqrt(q.shape[-1])
  # Heads-major (B, H, L, D) operands: every product below is a plain batched GEMM.
  qh, kh, vh = (y.transpose(0, 2, 1, 3) for y in (q, k, v))
  logits = jnp.einsum('bhqd,bhkd->bhqk', qh, kh, preferred_element_type=jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask, logits, _MASKED)
  e = jnp.exp(logits - logits.max(axis=-1, keepdims=True))
  probs = (e / e.sum(axis=-1, keepdims=True)).astype(v.dtype)
  out = jnp.matmul(probs, vh).transpose(0, 2, 1, 3)
  return out, (qh, kh, vh, probs, mask)


@jax.custom_vjp
def _cpu_attention(q, k, v, mask):
  return _cpu_attention_forward(q, k, v, mask)[0]


def _cpu_attention_backward(residuals, d_out):
  qh, kh, vh, probs, mask = residuals
  scale = 1.0 / np.sqrt(qh.shape[-1])
  d_out = d_out.transpose(0, 2, 1, 3)  # (B, H, Q, D)
  # dV and dK come out as (B, H, D, K): XLA:CPU runs that contraction over the queries
  # about twice as fast as the one that yields (B, H, K, D).
  d_vt = jnp.einsum('bhqd,bhqk->bhdk', d_out, probs)
  d_probs = jnp.einsum('bhqd,bhkd->bhqk', d_out, vh, preferred_element_type=jnp.float32)
  p = probs.astype(jnp.float32)
  d_logits = p * (d_probs - (d_probs * p).sum(axis=-1, keepdims=True))
  if mask is not None:  # A fully masked row's logits are constants: no gradient.
    d_logits = jnp.where(mask, d_logits, 0.0)
  d_logits = (d_logits * scale).astype(qh.dtype)
  d_q = jnp.matmul(d_logits, kh).transpose(0, 2, 1, 3)
  d_kt = jnp.einsum('bhqd,bhqk->bhdk', qh, d_logits)
  return d_q, d_kt.transpose(0, 3, 1, 2), d_vt.transpose(0, 3, 1, 2), None


_cpu_attention.defvjp(_cpu_attention_forward, _cpu_attention_backward)


def dot_product_attention(q, k, v, mask=None):
  """softmax(q k^T / sqrt(d)) v for q (B, Q, H, D), k and v (B, K, H, D), `mask` a boolean
  array broadcastable to (B, H, Q, K) (true = attend): `jax.nn.dot_product_attention`'s
  function and masking convention.

  On GPU and TPU it is `jax.nn.dot_product_attention` (a fused kernel where the platform
  has one). On CPU, where XLA runs that function's backward at about 20 GFLOP/s (a
  transposed layout and a masked-logits select it differentiates through), the same
  function runs with a hand-written backward over heads-major GEMMs and the saved
  probabilities (forward + backward timed against jax.nn's and PyTorch's in
  experiments/benchmarks/README.md). The form is picked when the step is lowered
  (`jax.lax.platform_dependent`), so an ahead-of-time TPU compile from a CPU host gets
  the platform's own."""
  def fused(q, k, v, mask):
    return jax.nn.dot_product_attention(q, k, v, mask=mask)
  return jax.lax.platform_dependent(q, k, v, mask, cpu=_cpu_attention, default=fused)


def multi_head_attention(x, context, keys, num_heads: int, dropout: float = 0.0, *,
                         train: bool, dtype=jnp.float32, prefix: str = ''):
  """Multi-head attention of `x` (B, Q, D) over `context` (B, K, Dc), `keys` a boolean
  mask broadcastable to (B, heads, Q, K). Declares its projections (`<prefix>query`,
  `key`, `value`, `attention_out`) in the calling module, so self- and cross-attention
  blocks share one implementation. Without dropout it runs through
  `dot_product_attention` (a fused kernel where the platform has one)."""
  width = x.shape[-1]
  if width % num_heads:
    raise ValueError(f'attention: width {width} is not divisible by {num_heads} heads')
  head = width // num_heads
  split = lambda y: y.reshape(*y.shape[:-1], num_heads, head)  # noqa: E731
  q = split(dense(width, ('embed', 'heads'), name=f'{prefix}query', dtype=dtype)(x))
  k = split(dense(width, ('embed', 'heads'), name=f'{prefix}key', dtype=dtype)(context))
  v = split(dense(width, ('embed', 'heads'), name=f'{prefix}value', dtype=dtype)(context))
  if dropout:
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(head).astype(q.dtype)
    probs = nn.Dropout(dropout, deterministic=not train)(masked_softmax(scores, keys))
    ctx = jnp.einsum('bhqk,bkhd->bqhd', probs, v)
  else:
    ctx = dot_product_attention(q, k, v, keys)
  return dense(width, ('heads', 'embed'), name=f'{prefix}attention_out', dtype=dtype)(
      ctx.reshape(*x.shape[:-1], width))


class TransformerEncoderLayer(nn.Module):
  """The transformer block every transformer of the codebase uses: multi-head
  self-attention and an MLP, each with a residual, over padded sequences (padded keys are
  masked out; padded positions come out as zeros).

  `norm='post'`: x = LN(x + MHA(x)); x = LN(x + FFN(x)) (Vaswani et al. 2017, PyTorch's
  default; the existing speech, contrastive and conversation models). `norm='pre'`:
  x = x + MHA(LN(x)); x = x + FFN(LN(x)) (ViT, MAE). With `attention_dropout` 0 the
  attention runs through `dot_product_attention` (a fused kernel where the platform
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
    norm_1, norm_2 = nn.LayerNorm(name='norm_1', dtype=dtype), nn.LayerNorm(name='norm_2',
                                                                           dtype=dtype)
    y = norm_1(x) if self.norm == 'pre' else x
    attn = multi_head_attention(y, y, keys, self.num_heads, attn_drop, train=train, dtype=dtype)
    width = x.shape[-1]
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
  (`norm_out`) in the pre-norm form. With `return_hidden` also every layer's output, in
  the pre-norm form through that same final norm (the intermediate features HiCMAE's
  skip connections and hierarchical contrastive loss read); the last equals the output."""
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
      norm = nn.LayerNorm(name='norm_out', dtype=jnp.dtype(self.dtype))
      out = lambda h: norm(h) * mask[..., None].astype(h.dtype)  # noqa: E731
      x = out(x)
      hidden = [out(h) for h in hidden[:-1]] + [x] if return_hidden else hidden
    return (x, hidden) if return_hidden else x


class CrossAttentionLayer(nn.Module):
  """A pre-norm block that first attends to another sequence, then to itself:
  x = x + CrossMHA(LN(x), LN(context)); then a pre-norm `TransformerEncoderLayer`
  (`block`). HiCMAE (Sun et al. 2024) uses this form for its cross-modal fusion encoder
  and for the decoder layers that read the encoder's intermediate layers.

  `mask` (B, Q) marks real queries, `context_mask` (B, K) real context positions."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  activation: str = 'gelu'
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, mask, context, context_mask, *, train: bool):
    dtype = jnp.dtype(self.dtype)
    keys = context_mask[:, None, None, :] > 0
    y = nn.LayerNorm(name='cross_norm', dtype=dtype)(x)
    c = nn.LayerNorm(name='context_norm', dtype=dtype)(context)
    if c.shape[-1] != y.shape[-1]:
      raise ValueError(f'CrossAttentionLayer: context width {c.shape[-1]} differs from the '
                       f'queries\' {y.shape[-1]}')
    attn = multi_head_attention(y, c, keys, self.num_heads, train=train, dtype=dtype,
                                prefix='cross_')
    x = x + nn.Dropout(self.dropout, deterministic=not train)(attn)
    x = x * mask[..., None].astype(x.dtype)
    return TransformerEncoderLayer(self.num_heads, self.mlp_dim, self.dropout, norm='pre',
                                   activation=self.activation, attention_dropout=0.0,
                                   dtype=self.dtype, name='block')(x, mask, train=train)
