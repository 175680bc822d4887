"""Pooling over padded axes."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `x` (B, T, ...) over the positions where `mask` (B, T) is nonzero; zero for
  a row without any (the divisor is at least 1)."""
  w = mask.astype(x.dtype).reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
  return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
