"""Masked autoencoders: audio (AudioMAE-style), video (VideoMAE-style), audio-visual
(HiCMAE-style), and the classifier that reuses their encoders.

Pretraining models (task `masked_reconstruction`):
- `AudioMAE`: a log-mel spectrogram (B, T, F) is cut into (time, frequency) patches
  (`layers/patches.py`); each example hides a random `mask_ratio` of its patches (the
  task's `masking` RNG stream, `layers/masking.py`); the encoder sees the visible patches
  only; a light decoder gets the encoded visible tokens back at their places, a learnt
  mask token everywhere else and fixed sin-cos positions, and predicts every patch
  (He et al. 2022; AudioMAE, Huang et al. 2022).
- `VideoMAE`: face clips (B, T, H, W, C) cut into (frames, height, width) tubelets, tube
  masking (the same spatial mask at every time step) at VideoMAE's 90% (Tong et al. 2022).
- `AudioVisualMAE`: both encoders on their visible tokens, a cross-modal fusion encoder
  (each stream attends to the other, then to itself), one decoder per modality, and
  HiCMAE's two additions (Sun et al. 2024): hierarchical skip connections (decoder layer
  i > 0 attends to an intermediate encoder layer, the deepest first) and hierarchical
  cross-modal contrastive learning (the task's InfoNCE between the mean-pooled visible
  tokens of the two encoders at those intermediate layers).

Each returns, per modality, {'prediction', 'target': (B, N, P), 'masked': (B, N)} (1 on
hidden tokens of real input); the task takes the mean squared error there, against
per-patch normalised values when `norm_targets`.

`MAEClassifier` (fine-tuning, task `classification`): the same encoders on every token
(no masking); with two modalities the same fusion encoder; mean over real tokens per
modality, concatenated into a linear head. Parameter paths match the pretraining models:
`encoder` for a one-modality model, `<modality>_encoder` and `fusion` for the
audio-visual one. A fine-tuning config loads them one to one with `config.init` (or maps a
one-modality run's `encoder` to `audio_encoder`), and gives them their own rate or freezes
them with `config.optim.groups`.

Input kinds go by rank: (B, T, F) is a spectrogram (its real frames in `mask_field`),
(B, T, H, W, C) a video (every frame real). Named sizes (`size`): `tiny` for CPU tests
and studies; `small`, `base` and `large` as the ViT encoders the papers use.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from affectjax.layers import masking, patches
from affectjax.layers.attention import CrossAttentionLayer, TransformerEncoder
from affectjax.layers.attention import TransformerEncoderLayer
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


def tokens_of(batch, modality: str, mask_field: str, patch: Sequence[int],
              tubelet: Sequence[int]):
  """(input cropped to whole patches, token validity (B, N), patch shape, token grid)."""
  x = batch[modality]
  if x.ndim == 3:
    x, valid = crop_to_patches(x, batch[mask_field], patch)
    shape = tuple(patch)
  elif x.ndim == 5:
    shape = tuple(tubelet)
    n = patches.num_tokens(x.shape[1:4], shape)  # A one-line error when it does not divide.
    valid = jnp.ones((x.shape[0], n), jnp.float32)
  else:
    raise ValueError(f'masked autoencoder: {modality!r} has shape {tuple(x.shape)}; expected '
                     '(batch, frames, mel bands) or (batch, frames, height, width, channels)')
  return x, valid, shape, patches.grid_shape(x.shape[1:1 + len(shape)], shape)


def mask_tokens(key, x, grid, audio_ratio: float, video_ratio: float):
  """Random masking for spectrograms, tube masking for video."""
  if x.ndim == 5:
    return masking.tube_masking(key, x.shape[0], grid, video_ratio)
  n = 1
  for g in grid:
    n *= g
  return masking.random_masking(key, x.shape[0], n, audio_ratio)


def _normalised(target: jax.Array) -> jax.Array:
  mean = target.mean(axis=-1, keepdims=True)
  var = target.var(axis=-1, keepdims=True)
  return (target - mean) / jnp.sqrt(var + 1e-6)


def _targets(x, shape, norm: bool) -> jax.Array:
  target = patches.patchify(x.astype(jnp.float32), shape)
  return _normalised(target) if norm else target


class PatchEncoder(nn.Module):
  """Patches (or tubelets) -> tokens + sin-cos positions -> pre-norm transformer. With
  `keep` (B, K) only those tokens are encoded; with `prefix` (width,) that token comes
  first (a classifier's CLS token). Returns (tokens (B, [1 +] K or N, width), their
  validity), and with `return_hidden` also every layer's output."""
  patch: Sequence[int]
  width: int
  depth: int
  heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, valid, keep=None, *, train: bool, return_hidden: bool = False,
               prefix=None):
    grid = patches.grid_shape(x.shape[1:1 + len(self.patch)], self.patch)
    h = patches.PatchEmbed(tuple(self.patch), self.width, self.dtype, name='patch_embed')(x)
    h = h + sincos_positions(grid, self.width).astype(h.dtype)[None]
    if keep is not None:
      h, valid = masking.take(h, keep), masking.take(valid, keep)
    if prefix is not None:  # (width,): a CLS token put before the patches, no position.
      b = h.shape[0]
      h = jnp.concatenate([jnp.broadcast_to(prefix.astype(h.dtype), (b, 1, self.width)), h], 1)
      valid = jnp.concatenate([jnp.ones((b, 1), valid.dtype), valid], 1)
    out = TransformerEncoder(self.depth, self.heads, self.mlp_ratio * self.width, self.dropout,
                             dtype=self.dtype, name='transformer')(h, valid, train=train,
                                                                   return_hidden=return_hidden)
    if return_hidden:
      return out[0], valid, out[1]
    return out, valid


class MAEDecoder(nn.Module):
  """Encoded visible tokens -> every token's patch values. The visible tokens go back to
  their places, a learnt mask token fills the rest, fixed sin-cos positions are added.
  With `skips` (depth - 1 intermediate encoder layers over the visible tokens, shallowest
  first) layer 0 is a plain block and layer i attends to skips[-i] (HiCMAE)."""
  out_dim: int
  width: int
  depth: int
  heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, h, keep, grid, valid, skips=(), *, train: bool):
    dtype = jnp.dtype(self.dtype)
    n = valid.shape[1]
    embed = dense(self.width, ('embed', 'hidden'), name='embed', dtype=dtype)
    mask_token = self.param('mask_token', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ('hidden',)), (self.width,))
    pos = sincos_positions(grid, self.width).astype(dtype)[None]
    full = masking.scatter(embed(h), keep, n, mask_token) + pos
    mlp = self.mlp_ratio * self.width
    if not skips:
      full = TransformerEncoder(self.depth, self.heads, mlp, self.dropout, dtype=self.dtype,
                                name='transformer')(full, valid, train=train)
    else:
      if len(skips) != self.depth - 1:
        raise ValueError(f'MAEDecoder: {len(skips)} skip connections for {self.depth} layers '
                         f'(need depth - 1)')
      pos_visible = masking.take(jnp.broadcast_to(pos, (h.shape[0], *pos.shape[1:])), keep)
      visible = masking.take(valid, keep)
      skip_embed = dense(self.width, ('embed', 'hidden'), name='skip_embed', dtype=dtype)
      full = TransformerEncoderLayer(self.heads, mlp, self.dropout, norm='pre',
                                     activation='gelu', attention_dropout=0.0,
                                     dtype=self.dtype, name='layer_0')(full, valid, train=train)
      for i in range(1, self.depth):
        context = skip_embed(skips[-i]) + pos_visible
        full = CrossAttentionLayer(self.heads, mlp, self.dropout, dtype=self.dtype,
                                   name=f'layer_{i}')(full, valid, context, visible,
                                                      train=train)
      full = nn.LayerNorm(name='norm_out', dtype=dtype)(full) * valid[..., None]
    return dense(self.out_dim, ('hidden', 'patch'), name='pred')(full).astype(jnp.float32)


class Fusion(nn.Module):
  """HiCMAE's cross-modal fusion encoder: at each of `depth` layers both streams are
  updated from the other's previous tokens (`CrossAttentionLayer`), then normalised."""
  depth: int
  heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, a, a_valid, b, b_valid, *, train: bool):
    for i in range(self.depth):
      a, b = (CrossAttentionLayer(self.heads, self.mlp_dim, self.dropout, dtype=self.dtype,
                                  name=f'first_{i}')(a, a_valid, b, b_valid, train=train),
              CrossAttentionLayer(self.heads, self.mlp_dim, self.dropout, dtype=self.dtype,
                                  name=f'second_{i}')(b, b_valid, a, a_valid, train=train))
    dtype = jnp.dtype(self.dtype)
    a = nn.LayerNorm(name='norm_first', dtype=dtype)(a) * a_valid[..., None]
    b = nn.LayerNorm(name='norm_second', dtype=dtype)(b) * b_valid[..., None]
    return a, b


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

  def _tubelet(self):
    return (2, 16, 16)

  @nn.compact
  def __call__(self, batch, *, train: bool):
    width, depth, heads, d_width, d_depth, d_heads = size_of(self.size)
    (m,) = self.modalities
    x, valid, shape, grid = tokens_of(batch, m, self.mask_field, self.patch, self._tubelet())
    keep, masked = mask_tokens(self.make_rng('masking'), x, grid, self.mask_ratio,
                               self.mask_ratio)
    h, _ = PatchEncoder(shape, width, depth, heads, self.mlp_ratio, self.dropout,
                        self.dtype, name='encoder')(x, valid, keep, train=train)
    size = x[0].size // valid.shape[1]
    pred = MAEDecoder(size, d_width, d_depth, d_heads, self.mlp_ratio, self.dropout,
                      self.dtype, name='decoder')(h, keep, grid, valid, train=train)
    return {'prediction': pred, 'target': _targets(x, shape, self.norm_targets),
            'masked': masked * valid}


class VideoMAE(AudioMAE):
  """Masked autoencoder of face-clip tubelets (VideoMAE): tube masking at `mask_ratio`;
  outputs as `AudioMAE`'s. `patch` is unused: video takes `tubelet`."""
  tubelet: Sequence[int] = (2, 16, 16)  # (frames, height, width), VideoMAE's.
  mask_ratio: float = 0.9  # VideoMAE's ratio (HiCMAE's for the face stream).

  def _tubelet(self):
    return self.tubelet


def _levels(depth: int, decoder_depth: int) -> list[int]:
  """The intermediate encoder layers (0-based) read by the decoder's skips and by the
  hierarchical contrastive loss: decoder_depth - 1 evenly spaced ones, e.g. 3, 6, 9 of 12
  layers for a 4-layer decoder (HiCMAE's choice)."""
  return [depth * (i + 1) // decoder_depth for i in range(decoder_depth - 1)]


class AudioVisualMAE(nn.Module):
  """HiCMAE-style audio-visual masked autoencoder.

  Returns {'reconstruction': {modality: {'prediction', 'target', 'masked'}},
  'levels': {modality: (L, B, D)}}: the L2-normalised mean of each encoder's visible
  tokens at the intermediate layers `_levels`, each through its encoder's final LayerNorm
  (as HiCMAE takes them; the skip connections read the same), for the task's
  hierarchical contrastive loss."""
  modalities: Sequence[str]
  out_dim: int = 0
  size: str = 'tiny'
  patch: Sequence[int] = (4, 16)
  tubelet: Sequence[int] = (2, 16, 16)
  audio_mask_ratio: float = 0.8  # HiCMAE's ratios: 80% of spectrogram patches,
  video_mask_ratio: float = 0.9  # 90% of face tubes.
  fusion_depth: int = 2
  decoder_depth: int = 0  # 0: the size's decoder depth.
  norm_targets: bool = True
  mask_field: str = 'frame_mask'
  mlp_ratio: int = 4
  dropout: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool):
    width, depth, heads, d_width, d_depth, d_heads = size_of(self.size)
    d_depth = self.decoder_depth or d_depth
    if len(self.modalities) != 2:
      raise ValueError(f'AudioVisualMAE: needs two modalities, got {tuple(self.modalities)}')
    levels = _levels(depth, d_depth)
    rng = self.make_rng('masking')
    enc, recon, pooled = {}, {}, {}
    for i, m in enumerate(self.modalities):
      x, valid, shape, grid = tokens_of(batch, m, self.mask_field, self.patch, self.tubelet)
      keep, masked = mask_tokens(jax.random.fold_in(rng, i), x, grid, self.audio_mask_ratio,
                                 self.video_mask_ratio)
      h, visible, hidden = PatchEncoder(shape, width, depth, heads, self.mlp_ratio,
                                        self.dropout, self.dtype, name=f'{m}_encoder')(
                                            x, valid, keep, train=train, return_hidden=True)
      skips = [hidden[j] for j in levels]  # Through the encoder's final norm (HiCMAE).
      pooled[m] = jnp.stack([_unit(masked_mean(s.astype(jnp.float32), visible))
                             for s in skips]) if skips else None
      enc[m] = _Encoded(h, visible, keep, grid, valid, skips, x, shape, masked)
    (a, b) = self.modalities
    ha, hb = Fusion(self.fusion_depth, heads, self.mlp_ratio * width, self.dropout,
                    self.dtype, name='fusion')(enc[a].tokens, enc[a].visible, enc[b].tokens,
                                               enc[b].visible, train=train)
    for m, h in ((a, ha), (b, hb)):
      e = enc[m]
      pred = MAEDecoder(e.x[0].size // e.valid.shape[1], d_width, d_depth, d_heads,
                        self.mlp_ratio, self.dropout, self.dtype, name=f'{m}_decoder')(
                            h, e.keep, e.grid, e.valid, e.skips, train=train)
      recon[m] = {'prediction': pred, 'target': _targets(e.x, e.shape, self.norm_targets),
                  'masked': e.masked * e.valid}
    out = {'reconstruction': recon}
    if levels:
      out['levels'] = pooled
    return out


class _Encoded(NamedTuple):
  """One modality after its encoder, as the fusion and its decoder need it."""
  tokens: jax.Array  # (B, visible, width): the encoder's output.
  visible: jax.Array  # (B, visible): 1 for real visible tokens.
  keep: jax.Array  # (B, visible): which of the grid's tokens were kept.
  grid: tuple  # The token grid's shape.
  valid: jax.Array  # (B, N): 1 for tokens that hold real input.
  skips: list  # The encoder's intermediate levels the decoder reads.
  x: jax.Array  # The input, cropped to whole patches.
  shape: tuple  # The patch (or tubelet) shape.
  masked: jax.Array  # (B, N): 1 for hidden tokens.


def _unit(v: jax.Array) -> jax.Array:
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-6)


class MAEClassifier(nn.Module):
  """The masked autoencoders' encoders on every token, then a linear head on the mean of
  the real tokens (`pool='mean'`) or on a learnt CLS token put before each modality's
  patches (`pool='cls'`; the token lives outside the encoders, so a pretraining run's
  encoders still load one to one); with two modalities, the audio-visual model's fusion
  encoder first."""
  modalities: Sequence[str]
  out_dim: int
  size: str = 'tiny'
  patch: Sequence[int] = (4, 16)
  tubelet: Sequence[int] = (2, 16, 16)
  fusion_depth: int = 2
  mask_field: str = 'frame_mask'
  mlp_ratio: int = 4
  dropout: float = 0.0
  head_dropout: float = 0.0
  pool: str = 'mean'
  # Fine-tuning regulariser (AudioMAE's): in training, hide this fraction of a
  # spectrogram's time rows and of its frequency columns of patches (SpecAugment on
  # patches, drawn from the `dropout` stream); the encoder skips them. 0 = off.
  time_mask: float = 0.0
  freq_mask: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool):
    width, depth, heads, *_ = size_of(self.size)
    if len(self.modalities) not in (1, 2):
      raise ValueError(f'MAEClassifier: one or two modalities, got {tuple(self.modalities)}')
    if self.pool not in ('mean', 'cls'):
      raise ValueError(f'MAEClassifier: pool {self.pool!r} (mean | cls)')
    encoded = []
    for m in self.modalities:
      x, valid, shape, grid = tokens_of(batch, m, self.mask_field, self.patch, self.tubelet)
      name = 'encoder' if len(self.modalities) == 1 else f'{m}_encoder'
      keep = None
      if train and x.ndim == 3 and (self.time_mask > 0 or self.freq_mask > 0):
        keep, _ = masking.structured_masking(self.make_rng('dropout'), x.shape[0], grid,
                                             self.time_mask, self.freq_mask)
      cls = None
      if self.pool == 'cls':
        cls = self.param(f'cls_{m}', nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ('embed',)), (width,))
      encoded.append(PatchEncoder(shape, width, depth, heads, self.mlp_ratio, self.dropout,
                                  self.dtype, name=name)(x, valid, keep, train=train,
                                                         prefix=cls))
    if len(encoded) == 2:
      (ha, va), (hb, vb) = encoded
      ha, hb = Fusion(self.fusion_depth, heads, self.mlp_ratio * width, self.dropout,
                      self.dtype, name='fusion')(ha, va, hb, vb, train=train)
      encoded = [(ha, va), (hb, vb)]
    if self.pool == 'cls':
      pooled = jnp.concatenate([h[:, 0].astype(jnp.float32) for h, _ in encoded], axis=-1)
    else:
      pooled = jnp.concatenate([masked_mean(h.astype(jnp.float32), v) for h, v in encoded],
                               axis=-1)
    pooled = nn.Dropout(self.head_dropout, deterministic=not train)(pooled)
    return dense(self.out_dim, ('embed', 'classes'), name='head')(pooled)
