"""Patches of spectrograms and tubelets of video, and their token embeddings.

A spectrogram (B, T, F) is cut into non-overlapping (pt, pf) patches in row-major
(time, frequency) order, as AudioMAE does; a video (B, T, H, W, C) into (tt, p, p)
tubelets in (time, height, width) order, as VideoMAE does. `patchify` and `unpatchify`
are exact inverses; the reconstruction targets of a masked autoencoder are the patches.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from affectjax.layers.dense import dense


def grid_shape(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
  """Tokens per axis of an input of per-example `shape` (spatial axes first, an optional
  trailing channel axis beyond len(patch)) cut into `patch`; a one-line error if an axis
  does not divide."""
  out = []
  for axis, (n, p) in enumerate(zip(shape, patch)):
    if p < 1 or n % p:
      raise ValueError(f'patches: axis {axis} has {n} values, not a multiple of the patch '
                       f'size {p} (input {tuple(shape)}, patch {tuple(patch)})')
    out.append(n // p)
  return tuple(out)


def patchify(x: jax.Array, patch: Sequence[int]) -> jax.Array:
  """(B, *axes[, C]) -> (B, num_patches, prod(patch) * C): patches in row-major grid
  order, each flattened in (patch axes..., channel) order."""
  k = len(patch)
  b, spatial, channels = x.shape[0], x.shape[1:1 + k], x.shape[1 + k:]
  grid = grid_shape(spatial, patch)
  shape = [b]
  for g, p in zip(grid, patch):
    shape += [g, p]
  x = x.reshape(*shape, *channels)
  # (B, g0, p0, g1, p1, ..., C) -> (B, g0, g1, ..., p0, p1, ..., C)
  order = [0] + [1 + 2 * i for i in range(k)] + [2 + 2 * i for i in range(k)] + [
      1 + 2 * k + i for i in range(len(channels))]
  x = x.transpose(order)
  n = 1
  for g in grid:
    n *= g
  return x.reshape(b, n, -1)


def unpatchify(patches: jax.Array, patch: Sequence[int], shape: Sequence[int]) -> jax.Array:
  """The inverse of `patchify`: (B, num_patches, D) -> (B, *shape), `shape` the
  per-example input shape (spatial axes[, channels])."""
  k = len(patch)
  spatial, channels = tuple(shape[:k]), tuple(shape[k:])
  grid = grid_shape(spatial, patch)
  b = patches.shape[0]
  x = patches.reshape(b, *grid, *patch, *channels)
  order = [0]
  for i in range(k):
    order += [1 + i, 1 + k + i]
  order += [1 + 2 * k + i for i in range(len(channels))]
  return x.transpose(order).reshape(b, *spatial, *channels)


class PatchEmbed(nn.Module):
  """Patches (or tubelets) to `width`-dim tokens: one linear map of each flattened patch,
  the same as a convolution with stride = kernel = `patch`. Returns (B, N, width)."""
  patch: Sequence[int]
  width: int
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x):
    tokens = patchify(x.astype(jnp.dtype(self.dtype)), tuple(self.patch))
    return dense(self.width, ('patch', 'embed'), name='projection',
                 dtype=jnp.dtype(self.dtype))(tokens)


def num_tokens(shape: Sequence[int], patch: Sequence[int]) -> int:
  n = 1
  for g in grid_shape(shape, patch):
    n *= g
  return n


