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


def _sincos(pos: jax.Array, width: int) -> jax.Array:
  """(n,) positions -> (n, width): sin of `width // 2` frequencies, then their cos (the
  MAE/ViT form; frequencies 1 / 10000^(2i / width))."""
  if width % 2:
    raise ValueError(f'sin-cos position embedding: width {width} must be even')
  freq = 1.0 / 10000.0 ** (jnp.arange(width // 2, dtype=jnp.float32) / (width / 2))
  angle = pos.astype(jnp.float32)[:, None] * freq[None]
  return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=1)


def sincos_positions(grid: tuple[int, ...], width: int) -> jax.Array:
  """Fixed sin-cos embeddings of a 1-D, 2-D or 3-D token grid, (prod(grid), width),
  row-major over `grid` (e.g. (time, frequency) patches or (time, height, width)
  tubelets). Each axis gets its own even share of `width` (the first axes take the
  remainder), as in MAE's 2-D and VideoMAE/AV-MAE's separable 3-D forms."""
  if not 1 <= len(grid) <= 3:
    raise ValueError(f'sincos_positions: grid {grid} must have 1 to 3 axes')
  share = (width // len(grid)) // 2 * 2
  widths = [share] * len(grid)
  widths[0] += width - share * len(grid)
  coords = jnp.meshgrid(*[jnp.arange(n) for n in grid], indexing='ij')
  return jnp.concatenate([_sincos(c.reshape(-1), w) for c, w in zip(coords, widths) if w],
                         axis=1)
