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
      return (jnp.where(ok, h_new, h), jnp.where(ok, c_new, c)), None

    zeros = jnp.zeros((b, self.hidden), dtype)
    (h, _), _ = jax.lax.scan(step, (zeros, zeros), (jnp.swapaxes(gates_x, 0, 1), valid))
    return h
