"""Recurrent layers."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from affectjax.layers.dense import dense


def _recurrence(gates_x: jax.Array, w_h: jax.Array, lengths: jax.Array,
                return_sequences: bool) -> jax.Array:
  """The LSTM recurrence of S stacked directions in one `lax.scan`: gates_x (S, B, T, 4H)
  (input projections), w_h (S, H, 4H). Returns the (S, B, T, H) states, zero at padded
  steps, or the (S, B, H) states after each sequence's last valid step."""
  s, b, t, four_h = gates_x.shape
  valid = jnp.arange(t)[:, None] < lengths[None, :]  # (T, B)

  def step(carry, inputs):
    h, c = carry
    gx, ok = inputs
    z = gx + jnp.einsum('sbh,shk->sbk', h, w_h)
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c_new = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
    h_new = nn.sigmoid(o) * jnp.tanh(c_new)
    ok = ok[None, :, None]
    h, c = jnp.where(ok, h_new, h), jnp.where(ok, c_new, c)
    return (h, c), (jnp.where(ok, h, 0) if return_sequences else None)

  zeros = jnp.zeros((s, b, four_h // 4), gates_x.dtype)
  (h, _), hs = jax.lax.scan(step, (zeros, zeros), (jnp.moveaxis(gates_x, 2, 0), valid))
  return jnp.moveaxis(hs, 0, 2) if return_sequences else h


class LSTM(nn.Module):
  """A one-layer LSTM that returns the hidden state after each sequence's last valid step.

  The input projection of all time steps is one (B*T, D) x (D, 4H) matmul outside the
  recurrence (as cuDNN does); the `lax.scan` carries only the (H, 4H) recurrent
  product. Steps at or past `lengths[b]` leave the state unchanged, so padding never
  affects the result. Gate order: input, forget, cell, output.
  """
  hidden: int
  dtype: str = 'float32'
  return_sequences: bool = False  # True: (B, T, H) states, zero at padded steps.
  weights_only: bool = False  # True: return (input projections, W_h) for a joint scan.

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array):
    dtype = jnp.dtype(self.dtype)
    gates_x = dense(4 * self.hidden, ('embed', 'mlp'), dtype=dtype, name='input')(x)
    w_h = self.param('recurrent', nn.with_logical_partitioning(
        nn.initializers.orthogonal(), ('hidden', 'mlp')), (self.hidden, 4 * self.hidden))
    w_h = w_h.astype(dtype)
    if self.weights_only:
      return gates_x, w_h
    return _recurrence(gates_x[None], w_h[None], lengths, self.return_sequences)[0]


def reverse_valid(x: jax.Array, lengths: jax.Array) -> jax.Array:
  """Reverses each sequence's first `lengths[b]` steps of (B, T, ...); padding stays put."""
  t = jnp.arange(x.shape[1])[None, :]
  idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
  return jnp.take_along_axis(x, idx.reshape(*idx.shape, *([1] * (x.ndim - 2))), axis=1)


class BiLSTM(nn.Module):
  """Stacked bidirectional LSTM over padded sequences: (B, T, D) -> (B, T, 2H).

  The backward direction reads each sequence from its own last valid step, so
  padding never reaches a real position in either direction.
  """
  hidden: int
  num_layers: int = 1
  dropout: float = 0.0  # Between layers, as PyTorch's nn.LSTM(dropout=...).
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array, *, train: bool) -> jax.Array:
    for i in range(self.num_layers):
      if i:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      fwd = LSTM(self.hidden, self.dtype, weights_only=True, name=f'forward_{i}')(x, lengths)
      bwd = LSTM(self.hidden, self.dtype, weights_only=True, name=f'backward_{i}')(
          reverse_valid(x, lengths), lengths)
      # Both directions advance in one scan: half the sequential steps of two scans.
      hs = _recurrence(jnp.stack([fwd[0], bwd[0]]), jnp.stack([fwd[1], bwd[1]]), lengths,
                       return_sequences=True)
      x = jnp.concatenate([hs[0], reverse_valid(hs[1], lengths)], axis=-1)
    return x
