"""Contrastive pretraining of one tower per modality, and the classifier that reuses them.

`ContrastiveModel` (pretraining, task `contrastive`): a tower per modality, a linear
projection head per modality, L2-normalised embeddings, a learnt logit scale (and, for the
sigmoid loss, a learnt bias). `Classifier` (fine-tuning or linear probing, task
`classification`): the same towers, their pooled features concatenated into a head.

The towers live under the same parameter paths in both models (`towers/<modality>`), so
a fine-tuning config loads them one to one with `config.init` (map `towers` -> `towers`)
and trains or freezes them with `config.optim.groups`.

A tower is chosen per modality by `towers.<modality>.kind`:
- `mlp`: a vector feature (B, D) through `num_layers` Dense+GELU layers of `width`;
- `ssm` / `transformer`: a sequence (B, T, D) with its mask field (`mask`, e.g.
  `frame_mask`), optionally `stride` consecutive frames stacked into one token, the
  codebase's SSM encoder or transformer encoder layers, mean over real positions;
- `speech_encoder`: a pretrained speech encoder's frozen layers, or the encoder itself
  fine-tuned (`models/speech.py`; the data decides which, through the data field
  `speech_encoder`), a learnt mix of its layers, `pool` (mean | mean_std | attention),
  and a projection to `width` (0: none).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from affectjax.layers.attention import TransformerEncoderLayer
from affectjax.layers.dense import dense
from affectjax.layers.pooling import masked_mean
from affectjax.layers.positions import sinusoidal_positions
from affectjax.layers.ssm import SSMEncoder
from affectjax.models.speech import POOLS as SPEECH_POOLS
from affectjax.models.speech import SpeechEncoderTower

TOWER_KINDS = ('mlp', 'ssm', 'transformer', 'speech_encoder')


class Tower(nn.Module):
  """One modality's encoder: (B, D) or (B, T, D) -> (B, width)."""
  kind: str
  width: int = 64
  num_layers: int = 2
  dropout: float = 0.1
  mask: str = ''  # Sequence towers: the batch field marking real positions.
  stride: int = 1  # Sequence towers: consecutive positions stacked into one token.
  pool: str = 'mean'  # Sequence towers: mean | mean_std (statistics pooling).
  # Sequence towers, training only: each token is dropped (masked out, SpecAugment-style)
  # with this probability, drawn from the `dropout` stream.
  token_drop: float = 0.0
  num_heads: int = 4
  mlp_ratio: int = 2
  ssm: str = 's5'
  bidirectional: bool = True
  # Speech-encoder towers: a learnt mix of all layers (else the last), the encoder's own
  # dropout and time masking when it is fine-tuned, and its source (set by the data).
  layer_weights: bool = True
  encoder_dropout: float = 0.0
  mask_time_prob: float = 0.0
  speech_encoder: str = ''
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    dtype = jnp.dtype(self.dtype)
    if self.kind == 'speech_encoder':
      return SpeechEncoderTower(self.speech_encoder, self.width, self.dropout, self.pool,
                                self.layer_weights, self.encoder_dropout, self.mask_time_prob,
                                self.dtype, name='speech')(x, mask, train=train)
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)  # noqa: E731
    x = x.astype(dtype)
    if self.kind == 'mlp':
      h = x
      for i in range(self.num_layers):
        h = drop(nn.gelu(dense(self.width, ('embed', 'mlp') if i else ('embed', 'hidden'),
                               dtype=dtype, name=f'dense_{i}')(h)))
        if i == 0:
          h = nn.LayerNorm(name='norm_in')(h)
      return h
    if self.stride > 1:  # (B, T, D) -> (B, T / s, s * D); a token is real if any frame is.
      b, t, dim = x.shape
      pad = -t % self.stride
      x = jnp.pad(x, ((0, 0), (0, pad), (0, 0))).reshape(b, -1, self.stride * dim)
      mask = jnp.pad(mask, ((0, 0), (0, pad))).reshape(b, -1, self.stride).max(-1)
    if train and self.token_drop > 0:
      keep = jax.random.bernoulli(self.make_rng('dropout'), 1 - self.token_drop, mask.shape)
      # A clip keeps at least its first real token.
      first = jnp.arange(mask.shape[1])[None] == jnp.argmax(mask > 0, axis=1)[:, None]
      mask = mask * (keep | first)
    if self.kind == 'ssm':
      h = SSMEncoder(self.width, self.num_layers, self.ssm, self.bidirectional,
                     dropout=self.dropout, dtype=self.dtype, name='encoder')(x, mask,
                                                                            train=train)
    else:
      h = dense(self.width, name='input', dtype=dtype)(x)
      h = h + sinusoidal_positions(x.shape[1], self.width).astype(dtype)
      for i in range(self.num_layers):
        h = TransformerEncoderLayer(self.num_heads, self.mlp_ratio * self.width, self.dropout,
                                    name=f'layer_{i}')(h, mask, train=train)
    mean = masked_mean(h, mask)
    if self.pool == 'mean':
      return mean
    var = masked_mean(jnp.square(h - mean[:, None]), mask)
    return jnp.concatenate([mean, jnp.sqrt(var + 1e-6)], axis=-1)


def check_towers(towers: Mapping[str, Mapping[str, Any]], modalities: Sequence[str]) -> None:
  for m in modalities:
    if m not in towers:
      raise ValueError(f'config.model.towers: no tower for modality {m!r} '
                       f'(have {sorted(towers)})')
    kind = towers[m].get('kind')
    if kind not in TOWER_KINDS:
      raise ValueError(f'config.model.towers.{m}.kind: {kind!r} ({" | ".join(TOWER_KINDS)})')
    if kind != 'mlp' and not towers[m].get('mask'):
      raise ValueError(f'config.model.towers.{m}.mask: a {kind} tower needs the name of its '
                       'mask field (e.g. frame_mask)')
    pools = SPEECH_POOLS if kind == 'speech_encoder' else ('mean', 'mean_std')
    if towers[m].get('pool', 'mean') not in pools:
      raise ValueError(f'config.model.towers.{m}.pool: {towers[m]["pool"]!r} '
                       f'({" | ".join(pools)})')


class Towers(nn.Module):
  """A tower per modality, each under its modality's name."""
  modalities: Sequence[str]
  towers: Mapping[str, Mapping[str, Any]]
  dtype: str = 'float32'
  speech_encoder: str = ''  # From the data: the source a fine-tuned speech tower runs.

  @nn.compact
  def __call__(self, batch, *, train: bool) -> dict[str, jax.Array]:
    out = {}
    for m in self.modalities:
      spec = dict(self.towers[m])
      if spec.get('kind') == 'speech_encoder':
        spec['speech_encoder'] = self.speech_encoder
      field = spec.get('mask', '')
      out[m] = Tower(**spec, dtype=self.dtype, name=m)(
          batch[m], batch[field] if field else None, train=train)
    return out

  def __post_init__(self):
    check_towers(self.towers, self.modalities)
    super().__post_init__()


class ContrastiveModel(nn.Module):
  """Towers, projection heads and normalised embeddings for contrastive pretraining.

  Returns {'embeddings': {modality: (B, embed_dim)}, 'scale', 'bias', 'features'}.
  `init_scale`: the logit scale at initialisation (CLIP: 1/0.07; SigLIP: 10), learnt in
  log space and capped at 100 as in CLIP; `init_bias`: SigLIP's bias (-10)."""
  modalities: Sequence[str]
  out_dim: int
  towers: Mapping[str, Mapping[str, Any]]
  embed_dim: int = 64
  init_scale: float = 1 / 0.07
  init_bias: float = -10.0
  dtype: str = 'float32'
  speech_encoder: str = ''
  data_fields: ClassVar[tuple[str, ...]] = ('speech_encoder',)

  @nn.compact
  def __call__(self, batch, *, train: bool):
    feats = Towers(self.modalities, self.towers, self.dtype, self.speech_encoder,
                   name='towers')(batch, train=train)
    emb = {}
    for m in self.modalities:
      z = dense(self.embed_dim, ('hidden', 'embed'), name=f'projection_{m}')(feats[m])
      z = z.astype(jnp.float32)
      emb[m] = z / jnp.sqrt(jnp.sum(z * z, axis=-1, keepdims=True) + 1e-12)
    log_scale = self.param('log_scale', nn.initializers.constant(math.log(self.init_scale)),
                           ())
    bias = self.param('bias', nn.initializers.constant(self.init_bias), ())
    return {'embeddings': emb, 'scale': jnp.exp(jnp.minimum(log_scale, math.log(100.0))),
            'bias': bias, 'features': feats}


class Classifier(nn.Module):
  """The towers of `ContrastiveModel` (same paths), their features concatenated in
  modality order, then `head`: linear when `hidden` is 0, else one GELU layer first."""
  modalities: Sequence[str]
  out_dim: int
  towers: Mapping[str, Mapping[str, Any]]
  hidden: int = 0
  dropout: float = 0.1
  dtype: str = 'float32'
  speech_encoder: str = ''
  data_fields: ClassVar[tuple[str, ...]] = ('speech_encoder',)

  @nn.compact
  def __call__(self, batch, *, train: bool):
    feats = Towers(self.modalities, self.towers, self.dtype, self.speech_encoder,
                   name='towers')(batch, train=train)
    h = jnp.concatenate([feats[m].astype(jnp.float32) for m in self.modalities], axis=-1)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    if self.hidden:
      h = nn.gelu(dense(self.hidden, ('embed', 'mlp'), name='head_hidden')(h))
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return dense(self.out_dim, ('hidden', 'classes'), name='head')(h)
