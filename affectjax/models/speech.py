"""Speech models: a pretrained speech encoder as a tower, and a transformer on log-mel.

`SpeechTransformer`: one label per clip from log-mel frames `batch['audio']` (B, T, mels)
with `frame_mask` (B, T); the attention baseline of `models/ssm.py`'s `SpeechSSM` (same
width and depth).

`SpeechEncoderTower`: a pretrained speech encoder's frozen features or the encoder itself,
then a learnt mix of its layers and a pooling over time.

`SpeechEncoderTower` is what `models/contrastive.py`'s `Tower(kind='speech_encoder')` runs,
so a speech encoder serves every model that mounts towers: the emotion classifier on
speech alone, speech with the face's action units, and contrastive pretraining.

Input, by the data pipeline's `config.data.encoder_mode` (`affectjax/data/encoded.py`):
- frozen: `x` (B, L, T, D), the cached hidden states of every layer, `mask` (B, T);
- fine-tuning: the encoder's own input (Whisper's log-mel (B, F, mels) or the waveform
  (B, S)) with its mask; the encoder runs here as the submodule `encoder` (its parameters
  load from the same source with `config.init.hf`,
  named by the data field `speech_encoder`; in a tower its path is
  `towers/<modality>/speech/encoder`).
Then: `layer_weights` (a softmax-weighted sum of the layer-normalised layers, SUPERB's
recipe) or the last layer alone; `pool` over real frames: `mean`, `mean_std` (statistics
pooling) or `attention` (a learnt score per frame, softmax over real frames, and the
weighted mean and standard deviation: attentive statistics pooling, Okabe et al. 2018);
then, with `width` > 0, dropout and a GELU projection to `width`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from affectjax.layers.attention import TransformerEncoderLayer, masked_softmax
from affectjax.layers.dense import dense
from affectjax.layers.pooling import layer_weighted_sum, masked_mean, masked_mean_std
from affectjax.layers.positions import sinusoidal_positions


def frames(batch):
  """(log-mel frames as float32 (B, T, mels), their mask (B, T))."""
  return batch['audio'].astype(jnp.float32), batch['frame_mask']


class SpeechTransformer(nn.Module):
  """The attention baseline for `SpeechSSM`: same width and depth, post-norm encoder
  layers with sinusoidal positions, mean over real frames, linear classifier."""
  modalities: Sequence[str]
  out_dim: int
  width: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_ratio: int = 2
  dropout: float = 0.1
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool):
    x, mask = frames(batch)
    h = dense(self.width, name='input')(x) + sinusoidal_positions(x.shape[1], self.width)
    for i in range(self.num_layers):
      h = TransformerEncoderLayer(self.num_heads, self.mlp_ratio * self.width, self.dropout,
                                  name=f'layer_{i}')(h, mask, train=train)
    h = nn.Dropout(self.dropout, deterministic=not train)(masked_mean(h, mask))
    return dense(self.out_dim, ('hidden', 'classes'), name='out')(h)

POOLS = ('mean', 'mean_std', 'attention')


class SpeechEncoderTower(nn.Module):
  """(frozen layers, or encoder input) and mask -> (B, features) pooled."""
  speech_encoder: str = ''  # '' = frozen features; else the source the encoder runs from.
  width: int = 0
  dropout: float = 0.1
  pool: str = 'mean'
  layer_weights: bool = True
  encoder_dropout: float = 0.0
  mask_time_prob: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    if self.pool not in POOLS:
      raise ValueError(f'speech encoder tower: pool {self.pool!r} ({" | ".join(POOLS)})')
    if self.speech_encoder:
      from affectjax.encoders import speech
      spec = speech.resolve(self.speech_encoder, 'the model\'s speech_encoder')
      hidden, mask = spec.module(self.encoder_dropout, self.mask_time_prob, self.dtype,
                                 name='encoder')(x, mask, train=train)
      h = jnp.stack(hidden, axis=1)
    else:
      if x.ndim != 4:
        raise ValueError(f'speech encoder tower: frozen features must be (B, layers, frames, '
                         f'dim), got {x.shape} (is config.data.encoder set?)')
      h = x
    if self.layer_weights:
      logits = self.param('layer_weights', nn.with_logical_partitioning(
          nn.initializers.zeros_init(), (None,)), (h.shape[1],))
      h = layer_weighted_sum(h, logits)
    else:
      h = h[:, -1].astype(jnp.float32)
    if self.pool == 'mean':
      out = masked_mean(h, mask)
    elif self.pool == 'mean_std':
      out = masked_mean_std(h, mask)
    else:
      # No bias on the score: softmax ignores it (its gradient is zero, Adam's update noise).
      scores = dense(1, ('embed', None), name='attention_score', use_bias=False)(
          jnp.tanh(dense(128, ('embed', 'mlp'), name='attention_hidden')(h)))[..., 0]
      w = masked_softmax(scores, mask > 0)[..., None]
      mean = (w * h).sum(1)
      out = jnp.concatenate([mean, jnp.sqrt((w * jnp.square(h - mean[:, None])).sum(1) + 1e-6)],
                            axis=-1)
    if self.width:
      out = nn.Dropout(self.dropout, deterministic=not train)(out)
      out = nn.gelu(dense(self.width, ('embed', 'hidden'), name='projection')(out))
    return out
