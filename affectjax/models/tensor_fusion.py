"""The tensor-fusion family: early fusion, late fusion, TFN and LMF.

Every model reads `batch[m]` for each modality `m` in `modalities` and returns
(B, out_dim) scores. Per-modality sizes come as mappings keyed by modality name,
so any subset of modalities runs from the same config.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from affectjax.layers import fusion
from affectjax.layers.dense import MLP, dense
from affectjax.layers.dropout import dropout
from affectjax.layers.recurrent import LSTM


def _per_modality(value) -> dict:
  return dict(text=value, audio=value, vision=value)


def _get(mapping: Mapping[str, float], modality: str, field: str):
  if modality not in mapping:
    raise ValueError(f'config.model.{field}: no entry for modality {modality!r} '
                     f'(have {sorted(mapping)})')
  return mapping[modality]


class ModalitySubnet(nn.Module):
  """The TFN/LMF modality embedding subnetwork for a feature vector: dropout,
  then `depth` Dense+ReLU layers of width `features`."""
  features: int
  depth: int = 3
  dropout: float = 0.0
  dtype: str = 'float32'
  dropout_rng_bits: int = 32

  @nn.compact
  def __call__(self, x, *, train: bool):
    return MLP((self.features,) * self.depth, dropout=self.dropout, dtype=self.dtype,
               dropout_rng_bits=self.dropout_rng_bits)(x, train=train)


class SequenceSubnet(nn.Module):
  """The TFN text subnetwork: an LSTM over the valid steps, its final hidden state,
  dropout, then a linear layer to `out_features`."""
  hidden: int
  out_features: int
  dropout: float = 0.0
  dtype: str = 'float32'
  dropout_rng_bits: int = 32

  @nn.compact
  def __call__(self, x, lengths, *, train: bool):
    h = LSTM(self.hidden, self.dtype)(x, lengths)
    h = dropout(self.dropout, not train, self.dropout_rng_bits)(h)
    return dense(self.out_features, dtype=jnp.dtype(self.dtype))(h)


def _lengths(batch, modality, x):
  lengths = batch.get(f'{modality}_lengths')
  return jnp.full(x.shape[:1], x.shape[1], jnp.int32) if lengths is None else lengths


def masked_time_mean(x, lengths):
  """Mean over the first `lengths` steps of (B, T, D) features."""
  valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
  total = jnp.sum(jnp.where(valid[..., None], x, 0), axis=1)
  return total / jnp.maximum(lengths, 1)[:, None].astype(x.dtype)


def _as_vector(batch, m):
  x = batch[m]
  return masked_time_mean(x, _lengths(batch, m, x)) if x.ndim == 3 else x


def _embed_modalities(module, batch, train):
  """Per-modality embeddings h_m: an LSTM for modalities listed in `lstm_out`,
  otherwise the MLP subnetwork (sequence inputs are first averaged over time)."""
  hs = []
  lstm_out = module.lstm_out or {}
  for m in module.modalities:
    x = batch[m]
    hidden, rate = _get(module.hidden, m, 'hidden'), _get(module.dropouts, m, 'dropouts')
    if m in lstm_out:
      if x.ndim != 3:
        raise ValueError(f'config.model.lstm_out: {m!r} input has shape {x.shape}, '
                         'an LSTM needs (B, T, D)')
      hs.append(SequenceSubnet(hidden, lstm_out[m], rate, module.dtype,
                               module.dropout_rng_bits, name=f'{m}_subnet')(x, _lengths(batch, m, x), train=train))
      continue
    if x.ndim == 3:
      x = masked_time_mean(x, _lengths(batch, m, x))
    hs.append(ModalitySubnet(hidden, module.subnet_depth, rate, module.dtype,
                             module.dropout_rng_bits, name=f'{m}_subnet')(x, train=train))
  return hs


class _SubnetworkFusion(nn.Module):
  """Fields shared by TFN and LMF: per-modality subnetworks feeding a fusion."""
  modalities: Sequence[str]
  out_dim: int
  hidden: Mapping[str, int] = dataclasses.field(default_factory=lambda: _per_modality(16))
  dropouts: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: _per_modality(0.1))
  subnet_depth: int = 2
  # e.g. {'text': 32}: an LSTM text subnetwork for sequence features.
  lstm_out: Mapping[str, int] = dataclasses.field(default_factory=dict)
  dtype: str = 'float32'
  # 32: Flax's dropout. 8: ByteDropout, a quarter of the random bits (layers/dropout.py).
  dropout_rng_bits: int = 32


class EarlyFusion(nn.Module):
  """Concatenate the modality features, then one MLP."""
  modalities: Sequence[str]
  out_dim: int
  mlp_hidden: Sequence[int] = (128, 128)
  dropout: float = 0.1
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    x = jnp.concatenate([_as_vector(batch, m) for m in self.modalities], axis=-1)
    return MLP(self.mlp_hidden, self.out_dim, dropout=self.dropout, dtype=self.dtype)(
        x, train=train)


class LateFusion(nn.Module):
  """One predictor per modality; the prediction is their mean (an additive model)."""
  modalities: Sequence[str]
  out_dim: int
  mlp_hidden: Sequence[int] = (64, 64)
  dropout: float = 0.1
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    outs = [
        MLP(self.mlp_hidden, self.out_dim, dropout=self.dropout, dtype=self.dtype,
            name=f'{m}_predictor')(_as_vector(batch, m), train=train)
        for m in self.modalities
    ]
    return sum(outs) / len(outs)


class TFN(_SubnetworkFusion):
  """Tensor Fusion Network (Zadeh et al., 2017).

  Modality subnetworks -> outer product of [h_m; 1] -> dropout -> post-fusion
  network (two Dense+ReLU layers of `post_fusion_dim`, then the output layer).
  The post-fusion weights are annotated `fusion_out` so they can be split over
  the mesh's `model` axis.
  """
  post_fusion_dim: int = 64
  post_fusion_dropout: float = 0.2
  # > 0: regression output squashed to (-range/2, range/2) by a scaled sigmoid, as the
  # TFN authors do for MOSI's [-3, 3] sentiment (range 6). 0: unconstrained.
  output_range: float = 0.0

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    dtype = jnp.dtype(self.dtype)
    z = fusion.tensor_fusion(_embed_modalities(self, batch, train))
    z = nn.with_logical_constraint(z, ('batch', 'fusion_in'))
    z = dropout(self.post_fusion_dropout, not train, self.dropout_rng_bits)(z)
    y = nn.relu(dense(self.post_fusion_dim, ('fusion_in', 'fusion_out'), dtype=dtype,
                      name='post_fusion_1')(z))
    y = nn.relu(dense(self.post_fusion_dim, ('fusion_out', 'hidden'), dtype=dtype,
                      name='post_fusion_2')(y))
    out = dense(self.out_dim, ('hidden', 'classes'), dtype=dtype, name='out')(y)
    if self.output_range:
      out = nn.sigmoid(out) * self.output_range - self.output_range / 2
    return out


class LMF(_SubnetworkFusion):
  """Low-rank Multimodal Fusion (Liu et al., 2018).

  Modality subnetworks -> rank-`rank` modality-specific factors (R, d_m + 1, F)
  combined by `fusion.low_rank_fusion` -> linear output layer. The factors'
  output axis is annotated `fusion_out` (split over `model`).
  """
  rank: int = 8
  fusion_dim: int = 64

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    dtype = jnp.dtype(self.dtype)
    hs = _embed_modalities(self, batch, train)
    init = nn.initializers.xavier_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    factors = [
        self.param(f'{m}_factor',
                   nn.with_logical_partitioning(init, ('rank', 'fusion_in', 'fusion_out')),
                   (self.rank, h.shape[-1] + 1, self.fusion_dim)).astype(dtype)
        for m, h in zip(self.modalities, hs)
    ]
    rank_weights = self.param(
        'rank_weights', nn.with_logical_partitioning(
            nn.initializers.normal(1.0 / self.rank ** 0.5), ('rank',)), (self.rank,))
    bias = self.param('fusion_bias', nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ('fusion_out',)), (self.fusion_dim,))
    y = fusion.low_rank_fusion([h.astype(dtype) for h in hs], factors,
                               rank_weights.astype(dtype), bias.astype(dtype))
    y = nn.with_logical_constraint(y, ('batch', 'fusion_out'))
    return dense(self.out_dim, ('fusion_out', 'classes'), dtype=dtype, name='out')(y)
