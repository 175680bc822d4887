"""State-space models for affect sequences, with the baselines they are compared against.

- `ContextualSSM` and `BcLSTM`: contextual sentiment over the utterances of a video
  (MOSI builder, `data.mode = 'contextual'`): `batch[m]` (B, L, D_m) per modality,
  `label_mask` (B, L); one output per utterance.
- `BroadMamba`: emotion recognition in conversation (conversation builders): any
  subset of modalities, `speaker` and `label_mask` (B, L); (B, L, classes) logits.
- `SpeechSSM`: one label per clip from log-mel frames `batch['audio']` (B, T, mels) with
  `frame_mask` (B, T); its attention baseline, `SpeechTransformer`, is in
  `models/speech.py`.

Padded utterances and frames never change real outputs (see `affectjax/layers/ssm.py`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from affectjax.layers.attention import masked_softmax
from affectjax.layers.dense import dense
from affectjax.layers.pooling import masked_mean
from affectjax.layers.recurrent import BiLSTM
from affectjax.layers.ssm import SSMEncoder
from affectjax.models.conversation import ConversationModel
from affectjax.models.speech import frames


def _mask(batch) -> jax.Array:
  return batch['label_mask']


def _bimodal_attention(x: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
  """Inter-modal attention of MMMU-BA (Ghosal et al. 2018) between two (B, L, W)
  contextual sequences: each utterance of one modality attends over the other
  modality's utterances of the video (padded ones masked out), and the attended vector
  gates its own features; returns [att(x <- y) * x, att(y <- x) * y], (B, L, 2W)."""
  keys = (mask > 0)[:, None, :] & (mask > 0)[:, :, None]
  x_from_y = masked_softmax(jnp.einsum('bid,bjd->bij', x, y), keys) @ y
  y_from_x = masked_softmax(jnp.einsum('bid,bjd->bij', y, x), keys) @ x
  return jnp.concatenate([x_from_y * x, y_from_x * y], axis=-1)


class ContextualSSM(nn.Module):
  """Per-modality bidirectional SSM context encoders, then a fusion over the utterances:

  - `fusion='ssm'`: the contextual features concatenated per utterance and read by a
    shared bidirectional SSM (the hierarchy of bc-LSTM, recurrences replaced by
    state-space layers);
  - `fusion='attention'`: inter-modal attention as in MMMU-BA (Ghosal et al. 2018) for
    every pair of modalities, concatenated with the contextual features, then a dense
    layer of `width`.
  """
  modalities: Sequence[str]
  out_dim: int
  ssm: str = 's5'  # s5 | mamba
  width: int = 64
  num_layers: int = 1
  fusion_layers: int = 1
  state_size: int = 0  # 0: the layer's default (64 for S5, 16 for the selective SSM).
  dropout: float = 0.3
  fusion: str = 'ssm'  # ssm | attention
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool):
    if self.fusion not in ('ssm', 'attention'):
      raise ValueError(f'config.model.fusion: unknown {self.fusion!r} (ssm | attention)')
    mask = _mask(batch)
    encoded = []
    for m in self.modalities:
      x = nn.Dropout(self.dropout, deterministic=not train)(batch[m].astype(jnp.float32))
      encoded.append(SSMEncoder(self.width, self.num_layers, self.ssm, True, self.state_size,
                                self.dropout, dtype=self.dtype, name=f'{m}_context')(
                                    x, mask, train=train))
    if self.fusion == 'attention':
      pairs = [_bimodal_attention(encoded[i], encoded[j], mask)
               for i in range(len(encoded)) for j in range(i + 1, len(encoded))]
      z = jnp.concatenate([*pairs, *encoded], axis=-1)
      z = nn.Dropout(self.dropout, deterministic=not train)(z)
      z = nn.relu(dense(self.width, ('embed', 'hidden'), name='fusion_dense')(z))
    else:
      z = jnp.concatenate(encoded, axis=-1)
      z = nn.Dropout(self.dropout, deterministic=not train)(z)
      z = SSMEncoder(self.width, self.fusion_layers, self.ssm, True, self.state_size,
                     self.dropout, dtype=self.dtype, name='fusion_context')(z, mask, train=train)
    z = nn.Dropout(self.dropout, deterministic=not train)(z)
    return dense(self.out_dim, ('hidden', 'classes'), name='out')(z)


class BcLSTM(nn.Module):
  """Hierarchical bidirectional contextual LSTM (Poria et al. 2017): a bc-LSTM per
  modality (BiLSTM over the utterances, dense layer), the contextual features
  concatenated and read by a second bc-LSTM. Sizes from the paper's code: LSTM 300
  units per direction in the first level, dense 100, dropout 0.4 / 0.5."""
  modalities: Sequence[str]
  out_dim: int
  hidden: int = 300
  dense_size: int = 100
  fusion_hidden: int = 300
  dropout: float = 0.5
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool):
    mask = _mask(batch)
    lengths = jnp.sum(mask > 0, axis=1).astype(jnp.int32)
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)  # noqa: E731
    encoded = []
    for m in self.modalities:
      h = BiLSTM(self.hidden, 1, dtype=self.dtype, name=f'{m}_bclstm')(
          drop(batch[m].astype(jnp.float32)), lengths, train=train)
      encoded.append(nn.relu(dense(self.dense_size, name=f'{m}_dense')(drop(h))))
    z = jnp.concatenate(encoded, axis=-1)
    if len(self.modalities) > 1:
      z = BiLSTM(self.fusion_hidden, 1, dtype=self.dtype, name='fusion_bclstm')(
          drop(z), lengths, train=train)
      z = nn.relu(dense(self.dense_size, name='fusion_dense')(drop(z)))
    out = dense(self.out_dim, ('hidden', 'classes'), name='out')(drop(z))
    return out * mask[..., None].astype(out.dtype)


class BroadMamba(ConversationModel):
  """Broad-Mamba-style ERC model (after Shou et al. 2024, "Revisiting Multi-modal
  Emotion Learning with Broad State Space Models and Probability-guidance Fusion").

  Per modality: projection plus speaker embedding, bidirectional selective-SSM context
  encoder, then a broad-learning expansion: `feature_nodes` groups of mapped features
  Z = ReLU(W_z h) and enhancement nodes E = tanh(W_e Z), read together with h by a
  per-modality classifier. Probability-guided fusion: each utterance's modality
  weights are a softmax over the modalities' confidence (their maximum class
  probability); the output is the log of the confidence-weighted mixture of the
  per-modality class distributions, so the cross-entropy trains every modality's
  classifier through its share of the mixture. With one modality this is that
  modality's classifier.
  """
  ssm: str = 'mamba'  # mamba | s5
  width: int = 128
  num_layers: int = 2
  state_size: int = 16
  feature_nodes: int = 4
  node_size: int = 32
  enhancement_size: int = 128
  confidence_temperature: float = 0.1
  dropout: float = 0.3

  @nn.compact
  def __call__(self, batch, *, train: bool):
    mask = _mask(batch)
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)  # noqa: E731
    speaker = nn.Embed(self.num_speakers, self.width, name='speaker_embedding')(
        batch['speaker'])
    log_probs = []
    for m, feats in zip(self.modalities, self.utterance_features(batch, train=train)):
      x = dense(self.width, name=f'{m}_in')(drop(feats.astype(jnp.float32))) + speaker
      h = SSMEncoder(self.width, self.num_layers, self.ssm, True, self.state_size,
                     self.dropout, dtype=self.dtype, name=f'{m}_context')(x, mask, train=train)
      z = nn.relu(dense(self.feature_nodes * self.node_size, name=f'{m}_feature_nodes')(h))
      e = jnp.tanh(dense(self.enhancement_size, name=f'{m}_enhancement_nodes')(z))
      broad = drop(jnp.concatenate([h, z, e], axis=-1))
      logits = dense(self.out_dim, ('hidden', 'classes'), name=f'{m}_classifier')(broad)
      log_probs.append(jax.nn.log_softmax(logits.astype(jnp.float32)))
    log_p = jnp.stack(log_probs, axis=-2)  # (B, L, M, C)
    confidence = jnp.max(log_p, axis=-1)  # log of the top class probability.
    weights = jax.nn.log_softmax(jnp.exp(confidence) / self.confidence_temperature, axis=-1)
    return jax.nn.logsumexp(log_p + weights[..., None], axis=-2)


class SpeechSSM(nn.Module):
  """Frame-level speech emotion recognition: SSM encoder over log-mel frames, mean
  over real frames, linear classifier. S5 by default: on a CPU its scan over P/2
  complex states is faster per step than the selective scan's (length, channels, 16)
  states (measured in experiments/benchmarks/README.md's scan table)."""
  modalities: Sequence[str]
  out_dim: int
  ssm: str = 's5'  # s5 | mamba
  width: int = 64
  num_layers: int = 2
  bidirectional: bool = True
  state_size: int = 0
  dropout: float = 0.1
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, batch, *, train: bool):
    x, mask = frames(batch)
    h = SSMEncoder(self.width, self.num_layers, self.ssm, self.bidirectional, self.state_size,
                   self.dropout, dtype=self.dtype, name='encoder')(x, mask, train=train)
    h = nn.Dropout(self.dropout, deterministic=not train)(masked_mean(h, mask))
    return dense(self.out_dim, ('hidden', 'classes'), name='out')(h)
