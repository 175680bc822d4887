"""Masked autoencoders: the audio MAE (AudioMAE-style) and the classifier that reuses it.

`AudioMAE` (pretraining, task `masked_reconstruction`): a log-mel spectrogram (B, T, F)
is cut into (time, frequency) patches (`layers/patches.py`); each example hides a random
`mask_ratio` of its patches (the task's `masking` RNG stream, `layers/masking.py`); the
encoder sees the visible patches only; a light decoder gets the encoded visible tokens
back at their places, a learnt mask token everywhere else and fixed sin-cos positions,
and predicts every patch. The loss (in the task) is the mean squared error on the hidden
patches of real (not padded) frames, against per-patch normalised values when
`norm_targets` (He et al. 2022; AudioMAE, Huang et al. 2022).

`AudioMAEClassifier` (fine-tuning, task `classification`): the same encoder on every
patch (no masking), mean over real tokens, a linear head. The encoder lives under
`encoder` in both models, so a fine-tuning config loads it one to one with `config.init`
(map `encoder` -> `encoder`) and gives it its own rate or freezes it with
`config.optim.groups`.

Named sizes (`size`): `tiny` for CPU tests and studies; `base` and `large` as the ViT
encoders AudioMAE and VideoMAE use (12 x 768 and 24 x 1024, decoder 8 x 512).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from affectjax.layers import masking, patches
from affectjax.layers.attention import TransformerEncoder
from affectjax.layers.dense import dense
from affectjax.layers.pooling import masked_mean
from affectjax.layers.positions import sincos_positions

# size: (width, depth, heads, decoder width, decoder depth, decoder heads)
SIZES = {
    'tiny': (64, 2, 4, 64, 1, 4),
    'small': (384, 12, 6, 256, 4, 8),
    'base': (768, 12, 12, 512, 8, 16),
    'large': (1024, 24, 16, 512, 8, 16),
}


def size_of(size: str) -> tuple[int, ...]:
  if size not in SIZES:
    raise ValueError(f'config.model.size: unknown {size!r} ({", ".join(SIZES)})')
  return SIZES[size]


def crop_to_patches(x: jax.Array, frame_mask: jax.Array, patch: Sequence[int]):
  """Drops the trailing frames (and mel bands) that do not fill a whole patch; returns
  (x, per-token validity (B, N): 1 where the patch holds at least one real frame)."""
  t = x.shape[1] // patch[0] * patch[0]
  f = x.shape[2] // patch[1] * patch[1]
  if not t or not f:
    raise ValueError(f'AudioMAE: input of {x.shape[1]} frames x {x.shape[2]} bands is '
                     f'smaller than one patch {tuple(patch)}')
  x, frame_mask = x[:, :t, :f], frame_mask[:, :t]
  valid = frame_mask.reshape(x.shape[0], t // patch[0], patch[0]).max(axis=2)
  valid = jnp.repeat(valid, f // patch[1], axis=1)  # Row-major: frequency runs fastest.
  return x, valid.astype(jnp.float32)


class AudioEncoder(nn.Module):
  """Patches -> tokens + sin-cos positions -> pre-norm transformer. With `keep` (B, K)
  only those tokens are encoded. Returns (tokens (B, K or N, width), their validity)."""
  patch: Sequence[int]
  width: int
  depth: int
  heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, valid, keep=None, *, train: bool):
    grid = patches.grid_shape(x.shape[1:3], self.patch)
    h = patches.PatchEmbed(tuple(self.patch), self.width, self.dtype, name='patch_embed')(x)
    h = h + sincos_positions(grid, self.width).astype(h.dtype)[None]
    if keep is not None:
      h, valid = masking.take(h, keep), masking.take(valid, keep)
    h = TransformerEncoder(self.depth, self.heads, self.mlp_ratio * self.width, self.dropout,
                           dtype=self.dtype, name='transformer')(h, valid, train=train)
    return h, valid


def _normalised(target: jax.Array) -> jax.Array:
  mean = target.mean(axis=-1, keepdims=True)
  var = target.var(axis=-1, keepdims=True)
  return (target - mean) / jnp.sqrt(var + 1e-6)


class AudioMAE(nn.Module):
  """Masked autoencoder of log-mel patches; returns {'prediction', 'target', 'masked'}
  over every patch (B, N, P), `masked` (B, N) 1 on hidden patches of real frames."""
  modalities: Sequence[str]
  out_dim: int = 0
  size: str = 'tiny'
  patch: Sequence[int] = (4, 16)  # (frames, mel bands): 80 ms x 16 bands at 50 frames/s.
  mask_ratio: float = 0.8  # AudioMAE's ratio.
  norm_targets: bool = True
  mask_field: str = 'frame_mask'
  mlp_ratio: int = 4
  dropout: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool):
    width, depth, heads, d_width, d_depth, d_heads = size_of(self.size)
    (m,) = self.modalities
    x, valid = crop_to_patches(batch[m], batch[self.mask_field], self.patch)
    b, n = valid.shape
    keep, masked = masking.random_masking(self.make_rng('masking'), b, n, self.mask_ratio)
    h, _ = AudioEncoder(self.patch, width, depth, heads, self.mlp_ratio, self.dropout,
                        self.dtype, name='encoder')(x, valid, keep, train=train)
    h = dense(d_width, ('embed', 'hidden'), name='decoder_embed', dtype=jnp.dtype(self.dtype))(h)
    mask_token = self.param('mask_token', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ('hidden',)), (d_width,))
    full = masking.scatter(h, keep, n, mask_token)
    grid = patches.grid_shape(x.shape[1:3], self.patch)
    full = full + sincos_positions(grid, d_width).astype(full.dtype)[None]
    full = TransformerEncoder(d_depth, d_heads, self.mlp_ratio * d_width, self.dropout,
                              dtype=self.dtype, name='decoder')(full, valid, train=train)
    size = self.patch[0] * self.patch[1]
    pred = dense(size, ('hidden', 'patch'), name='decoder_pred')(full).astype(jnp.float32)
    target = patches.patchify(x.astype(jnp.float32), self.patch)
    if self.norm_targets:
      target = _normalised(target)
    return {'prediction': pred, 'target': target, 'masked': masked * valid}


class AudioMAEClassifier(nn.Module):
  """The AudioMAE encoder on every patch, mean-pooled over real tokens, a linear head."""
  modalities: Sequence[str]
  out_dim: int
  size: str = 'tiny'
  patch: Sequence[int] = (4, 16)
  mask_field: str = 'frame_mask'
  mlp_ratio: int = 4
  dropout: float = 0.0
  head_dropout: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool):
    width, depth, heads, *_ = size_of(self.size)
    (m,) = self.modalities
    x, valid = crop_to_patches(batch[m], batch[self.mask_field], self.patch)
    h, valid = AudioEncoder(self.patch, width, depth, heads, self.mlp_ratio, self.dropout,
                            self.dtype, name='encoder')(x, valid, train=train)
    pooled = masked_mean(h.astype(jnp.float32), valid)
    pooled = nn.Dropout(self.head_dropout, deterministic=not train)(pooled)
    return dense(self.out_dim, ('embed', 'classes'), name='head')(pooled)
