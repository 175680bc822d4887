"""Random token masking for masked autoencoders, per example, from an RNG key.

The key comes from the task's `masking` RNG stream, which the trainer derives from the
run's seed and the step (`experiment.Experiment._rngs`), so a resumed run masks exactly what
the uninterrupted one did. Every example keeps the same number of tokens (static shapes),
chosen uniformly at random (MAE's per-example shuffle: the `keep` lowest of uniform noise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def num_kept(num_tokens: int, mask_ratio: float) -> int:
  """Visible tokens per example: round((1 - ratio) * N), at least 1."""
  if not 0.0 <= mask_ratio < 1.0:
    raise ValueError(f'mask_ratio={mask_ratio}: must be in [0, 1)')
  return max(1, int(round(num_tokens * (1.0 - mask_ratio))))


def random_masking(key: jax.Array, batch: int, num_tokens: int, mask_ratio: float):
  """Per-example random masks.

  Returns:
    keep: (B, K) int32 indices of the visible tokens, ascending.
    masked: (B, N) float32, 1 where a token is hidden (the loss is taken there).
  """
  k = num_kept(num_tokens, mask_ratio)
  noise = jax.random.uniform(key, (batch, num_tokens))
  keep = jnp.sort(jnp.argsort(noise, axis=1)[:, :k], axis=1).astype(jnp.int32)
  masked = jnp.ones((batch, num_tokens), jnp.float32)
  masked = masked.at[jnp.arange(batch)[:, None], keep].set(0.0)
  return keep, masked


def _visible(masked: jax.Array, k: int) -> jax.Array:
  """Ascending indices (B, k) of the 0 entries of a 0/1 mask with exactly k zeros per row:
  a stable sort puts the zeros first, in index order."""
  return jnp.argsort(masked, axis=1, stable=True)[:, :k].astype(jnp.int32)


def tube_masking(key: jax.Array, batch: int, grid: tuple[int, ...], mask_ratio: float):
  """VideoMAE's tube masking over a (time, *space) token grid: one random spatial mask
  per example, the same at every time step. Returns (keep, masked) as `random_masking`,
  over the flattened grid (time-major)."""
  t, space = grid[0], 1
  for g in grid[1:]:
    space *= g
  _, spatial = random_masking(key, batch, space, mask_ratio)
  masked = jnp.tile(spatial, (1, t))  # (B, T * S), time-major.
  k = t * num_kept(space, mask_ratio)
  return _visible(masked, k), masked


def structured_masking(key: jax.Array, batch: int, grid: tuple[int, int], time_ratio: float,
                       freq_ratio: float):
  """AudioMAE's fine-tuning masking over a (time, frequency) token grid: per example,
  round(ratio * rows) random time rows and round(ratio * columns) random frequency columns
  are hidden whole (SpecAugment on patches). Every example keeps the same
  (T - t) * (F - f) tokens. Returns (keep (B, K) ascending indices into the row-major
  grid, masked (B, N) 1 where hidden)."""
  t, f = grid
  drop_t, drop_f = int(round(t * time_ratio)), int(round(f * freq_ratio))
  if not (0 <= drop_t < t and 0 <= drop_f < f):
    raise ValueError(f'structured masking: ratios ({time_ratio}, {freq_ratio}) hide every '
                     f'row or column of a {t} x {f} token grid')
  key_t, key_f = jax.random.split(key)
  _, rows = random_masking(key_t, batch, t, drop_t / t)  # (B, T): 1 on hidden rows.
  _, cols = random_masking(key_f, batch, f, drop_f / f)
  masked = jnp.maximum(rows[:, :, None], cols[:, None, :]).reshape(batch, t * f)
  k = (t - drop_t) * (f - drop_f)
  return _visible(masked, k), masked


def take(tokens: jax.Array, index: jax.Array) -> jax.Array:
  """tokens (B, N, ...) at index (B, K) -> (B, K, ...)."""
  return jnp.take_along_axis(tokens, index.reshape(*index.shape, *([1] * (tokens.ndim - 2))),
                             axis=1)


def scatter(visible: jax.Array, keep: jax.Array, num_tokens: int, fill: jax.Array) -> jax.Array:
  """Puts visible tokens (B, K, D) back at `keep` in a (B, N, D) sequence whose other
  positions hold `fill` (D,) (the decoder's mask token)."""
  b, _, d = visible.shape
  out = jnp.broadcast_to(fill.astype(visible.dtype), (b, num_tokens, d))
  return out.at[jnp.arange(b)[:, None], keep].set(visible)
