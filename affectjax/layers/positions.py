"""Fixed position encodings."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def sinusoidal_positions(length: int, width: int) -> jax.Array:
  """Vaswani et al. 2017 position encodings, (length, width)."""
  pos = jnp.arange(length, dtype=jnp.float32)[:, None]
  freq = jnp.exp(-math.log(10000.0) * jnp.arange(0, width, 2, dtype=jnp.float32) / width)
  enc = jnp.zeros((length, width), jnp.float32)
  enc = enc.at[:, 0::2].set(jnp.sin(pos * freq))
  return enc.at[:, 1::2].set(jnp.cos(pos * freq[:width // 2]))
