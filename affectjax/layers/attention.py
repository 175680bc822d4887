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


def _cpu_attention_forward(q, k, v, mask, bias):
  scale = 1.0 / np.sqrt(q.shape[-1])
  # Heads-major (B, H, L, D) operands: every product below is a plain batched GEMM.
  qh, kh, vh = (y.transpose(0, 2, 1, 3) for y in (q, k, v))
  logits = jnp.einsum('bhqd,bhkd->bhqk', qh, kh, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, _MASKED)
  e = jnp.exp(logits - logits.max(axis=-1, keepdims=True))
  probs = (e / e.sum(axis=-1, keepdims=True)).astype(v.dtype)
  out = jnp.matmul(probs, vh).transpose(0, 2, 1, 3)
  return out, (qh, kh, vh, probs, mask, bias)


@jax.custom_vjp
def _cpu_attention(q, k, v, mask, bias):
  return _cpu_attention_forward(q, k, v, mask, bias)[0]


def _cpu_attention_backward(residuals, d_out):
  qh, kh, vh, probs, mask, bias = residuals
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
  d_bias = None
  if bias is not None:  # Summed over the axes the bias was broadcast along.
    axes = tuple(i for i, (b, n) in enumerate(zip(bias.shape, d_logits.shape)) if b != n)
    d_bias = d_logits.sum(axis=axes, keepdims=True).astype(bias.dtype)
  d_logits = (d_logits * scale).astype(qh.dtype)
  d_q = jnp.matmul(d_logits, kh).transpose(0, 2, 1, 3)
  d_kt = jnp.einsum('bhqd,bhqk->bhdk', qh, d_logits)
  return d_q, d_kt.transpose(0, 3, 1, 2), d_vt.transpose(0, 3, 1, 2), None, d_bias


_cpu_attention.defvjp(_cpu_attention_forward, _cpu_attention_backward)


def dot_product_attention(q, k, v, mask=None, bias=None):
  """softmax(q k^T / sqrt(d) + bias) v for q (B, Q, H, D), k and v (B, K, H, D), `mask` a
  boolean array broadcastable to (B, H, Q, K) (true = attend) and `bias` a 4-D array
  broadcastable to it (e.g. relative position biases): `jax.nn.dot_product_attention`'s
  function and conventions.

  On GPU and TPU it is `jax.nn.dot_product_attention` (a fused kernel where the platform
  has one). On CPU, where XLA runs that function's backward at about 20 GFLOP/s (a
  transposed layout and a masked-logits select it differentiates through), the same
  function runs with a hand-written backward over heads-major GEMMs and the saved
  probabilities (forward + backward timed against jax.nn's and PyTorch's in
  experiments/benchmarks/README.md). The form is picked when the step is lowered
  (`jax.lax.platform_dependent`), so an ahead-of-time TPU compile from a CPU host gets
  the platform's own."""
  if bias is not None and bias.ndim != 4:
    raise ValueError(f'dot_product_attention: bias must be 4-D (B, H, Q, K), got {bias.shape}')

  def fused(q, k, v, mask, bias):
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)
  return jax.lax.platform_dependent(q, k, v, mask, bias, cpu=_cpu_attention, default=fused)


def multi_head_attention(x, context, keys, num_heads: int, dropout: float = 0.0, *,
                         train: bool, dtype=jnp.float32, prefix: str = '',
                         key_bias: bool = True, bias=None):
  """Multi-head attention of `x` (B, Q, D) over `context` (B, K, Dc), `keys` a boolean
  mask broadcastable to (B, heads, Q, K), `bias` an optional 4-D additive bias on the
  logits (relative positions). Declares its projections (`<prefix>query`, `key`, `value`,
  `attention_out`) in the calling module, so self- and cross-attention blocks share one
  implementation; `key_bias=False` for models whose key projection has none (Whisper).
  Without dropout it runs through `dot_product_attention` (a fused kernel where the
  platform has one)."""
  width = x.shape[-1]
  if width % num_heads:
    raise ValueError(f'attention: width {width} is not divisible by {num_heads} heads')
  head = width // num_heads
  split = lambda y: y.reshape(*y.shape[:-1], num_heads, head)  # noqa: E731
  q = split(dense(width, ('embed', 'heads'), name=f'{prefix}query', dtype=dtype)(x))
  k = split(dense(width, ('embed', 'heads'), name=f'{prefix}key', dtype=dtype,
                  use_bias=key_bias)(context))
  v = split(dense(width, ('embed', 'heads'), name=f'{prefix}value', dtype=dtype)(context))
  if dropout:
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(head).astype(q.dtype)
    if bias is not None:
      scores = scores + bias.astype(scores.dtype)
    probs = nn.Dropout(dropout, deterministic=not train)(masked_softmax(scores, keys))
    ctx = jnp.einsum('bhqk,bkhd->bqhd', probs, v)
  else:
    ctx = dot_product_attention(q, k, v, keys, bias)
  return dense(width, ('heads', 'embed'), name=f'{prefix}attention_out', dtype=dtype)(
      ctx.reshape(*x.shape[:-1], width))


ACTIVATIONS = {
    'relu': jax.nn.relu,
    'gelu': jax.nn.gelu,  # The tanh approximation (jax's default).
    'gelu_exact': lambda x: jax.nn.gelu(x, approximate=False),  # erf: BERT, Whisper, wav2vec2.
}


class TransformerEncoderLayer(nn.Module):
  """The transformer block every transformer of the codebase uses, the pretrained
  encoders' included: multi-head self-attention and an MLP, each with a residual, over
  padded sequences (padded keys are masked out; padded positions come out as zeros).

  `norm='post'`: x = LN(x + MHA(x)); x = LN(x + FFN(x)) (Vaswani et al. 2017, BERT,
  wav2vec2-base; PyTorch's default). `norm='pre'`: x = x + MHA(LN(x)); x = x + FFN(LN(x))
  (ViT, MAE, Whisper, wav2vec2-large's "stable layer norm"). With `attention_dropout` 0
  the attention runs through `dot_product_attention` (a fused kernel where the platform
  has one); dropout on the attention weights (`attention_dropout`, default `dropout`)
  needs the explicit softmax. Parameter names are the same either way: `query`, `key`,
  `value`, `attention_out`, `norm_1` (the attention's norm), `mlp_in`, `mlp_out`, `norm_2`.

  `position_bias` (B or 1, heads, T, T) is added to the attention logits; with
  `gated_bias` (WavLM, Chen et al. 2022) it is first scaled per query and head by a gate
  computed from the attention's input (`gru_rel_pos_linear`, `gru_rel_pos_const`).
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.1
  causal: bool = False
  norm: str = 'post'  # post | pre
  activation: str = 'relu'  # relu | gelu (tanh approximation) | gelu_exact
  attention_dropout: float | None = None  # None: `dropout`.
  layer_norm_eps: float = 1e-6
  key_bias: bool = True
  gated_bias: bool = False
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, mask, *, train: bool, position_bias=None):
    if self.norm not in ('pre', 'post'):
      raise ValueError(f'TransformerEncoderLayer.norm: unknown {self.norm!r} (pre | post)')
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'TransformerEncoderLayer.activation: unknown {self.activation!r} '
                       f'({" | ".join(ACTIVATIONS)})')
    dtype = jnp.dtype(self.dtype)
    keys = mask[:, None, None, :] > 0
    if self.causal:
      keys &= jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))[None, None]
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)  # noqa: E731
    attn_drop = self.dropout if self.attention_dropout is None else self.attention_dropout
    norm = lambda name: nn.LayerNorm(self.layer_norm_eps, name=name, dtype=dtype)  # noqa: E731
    norm_1, norm_2 = norm('norm_1'), norm('norm_2')
    y = norm_1(x) if self.norm == 'pre' else x
    if position_bias is not None and self.gated_bias:
      position_bias = self._gate(y) * position_bias
    attn = multi_head_attention(y, y, keys, self.num_heads, attn_drop, train=train, dtype=dtype,
                                key_bias=self.key_bias, bias=position_bias)
    width = x.shape[-1]
    act = ACTIVATIONS[self.activation]
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

  def _gate(self, y):
    """WavLM's gate (B, heads, T, 1) of the relative position bias, from the attention
    input `y` (B, T, D) split into heads."""
    b, t, width = y.shape
    heads = y.reshape(b, t, self.num_heads, width // self.num_heads)
    proj = dense(8, ('embed', None), name='gru_rel_pos_linear')(heads)
    gate_a, gate_b = jnp.split(jax.nn.sigmoid(proj.reshape(b, t, self.num_heads, 2, 4).sum(-1)),
                               2, axis=-1)
    const = self.param('gru_rel_pos_const', nn.with_logical_partitioning(
        nn.initializers.ones_init(), ('heads',)), (self.num_heads,))
    gate = gate_a[..., 0] * (gate_b[..., 0] * const - 1.0) + 2.0  # (B, T, heads)
    return gate.transpose(0, 2, 1)[..., None].astype(jnp.float32)


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
