"""Recurrent layers."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from affectjax.layers.dense import dense


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

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    dtype = jnp.dtype(self.dtype)
    b, t, _ = x.shape
    gates_x = dense(4 * self.hidden, ('embed', 'mlp'), dtype=dtype, name='input')(x)
    w_h = self.param('recurrent', nn.with_logical_partitioning(
        nn.initializers.orthogonal(), ('hidden', 'mlp')), (self.hidden, 4 * self.hidden))
    w_h = w_h.astype(dtype)
    valid = jnp.arange(t)[:, None] < lengths[None, :]  # (T, B)

    def step(carry, inputs):
      h, c = carry
      gx, ok = inputs
      z = gx + h @ w_h
      i, f, g, o = jnp.split(z, 4, axis=-1)
      c_new = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
      h_new = nn.sigmoid(o) * jnp.tanh(c_new)
      ok = ok[:, None]
      h, c = jnp.where(ok, h_new, h), jnp.where(ok, c_new, c)
      return (h, c), (jnp.where(ok, h, 0) if self.return_sequences else None)

    zeros = jnp.zeros((b, self.hidden), dtype)
    (h, _), hs = jax.lax.scan(step, (zeros, zeros), (jnp.swapaxes(gates_x, 0, 1), valid))
    return jnp.swapaxes(hs, 0, 1) if self.return_sequences else h


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
      fwd = LSTM(self.hidden, self.dtype, True, name=f'forward_{i}')(x, lengths)
      bwd = LSTM(self.hidden, self.dtype, True, name=f'backward_{i}')(
          reverse_valid(x, lengths), lengths)
      x = jnp.concatenate([fwd, reverse_valid(bwd, lengths)], axis=-1)
    return x
