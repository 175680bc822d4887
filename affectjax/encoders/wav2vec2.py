"""The wav2vec2 family in Flax: wav2vec2 (Baevski et al. 2020), HuBERT (Hsu et al. 2021),
data2vec-audio (Baevski et al. 2022) and WavLM (Chen et al. 2022), from a Hugging Face
folder's `config.json` and weights.

Shared architecture: a convolutional feature encoder on the raw 16 kHz waveform (7 layers,
stride 320 in total: 50 frames a second; GroupNorm on the first layer, or LayerNorm on
every layer), a feature projection, a convolutional relative position embedding (one
grouped, weight-normalised convolution; data2vec-audio: a stack of small ones with
LayerNorm), then transformer blocks (`layers/attention.py`), post-norm or, with
`do_stable_layer_norm` (the "large" models), pre-norm with a final LayerNorm. WavLM adds a
bucketed relative position bias, computed once and gated per layer, head and query.

Padding is exact: in a batch of mixed lengths the GroupNorm statistics are taken over each
clip's real frames, padded frames are zeroed before every position convolution and masked
out of attention, so each clip's real frames equal those of the clip alone. (Hugging
Face's GroupNorm models, which were trained without attention masks, normalise over the
padding too; there a padded batch differs from the clip alone.)

The position convolution's weight norm (g * v / ||v||) is folded into one kernel when the
weights are loaded: the forward pass is the same; fine-tuning trains that kernel directly.
The input normalisation (zero mean, unit variance per clip, `do_normalize` in the folder's
`preprocessor_config.json`) belongs to the data pipeline: `normalize_waveforms`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from affectjax.encoders import hf
from affectjax.errors import DataError
from affectjax.layers.attention import TransformerEncoderLayer

MODEL_TYPES = ('wav2vec2', 'hubert', 'data2vec-audio', 'wavlm')


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
  """The sizes and variants of one model (Hugging Face's field names)."""
  model_type: str
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  conv_dim: tuple[int, ...]
  conv_kernel: tuple[int, ...]
  conv_stride: tuple[int, ...]
  conv_bias: bool = False
  feat_extract_norm: str = 'group'  # group | layer
  do_stable_layer_norm: bool = False
  num_conv_pos_embeddings: int = 128  # data2vec-audio: the number of position conv layers.
  num_conv_pos_embedding_groups: int = 16
  conv_pos_kernel_size: int = 19  # data2vec-audio only.
  layer_norm_eps: float = 1e-5
  feat_proj_layer_norm: bool = True  # HuBERT may leave it out.
  num_buckets: int = 320  # WavLM.
  max_bucket_distance: int = 800  # WavLM.
  mask_time_length: int = 10

  @classmethod
  def from_dict(cls, raw: dict, where: str) -> 'Wav2Vec2Config':
    model_type = raw.get('model_type')
    if model_type not in MODEL_TYPES:
      raise DataError(f'{where}: field model_type is {model_type!r} ({", ".join(MODEL_TYPES)})')
    for field in ('hidden_act', 'feat_extract_activation'):
      if raw.get(field, 'gelu') != 'gelu':
        raise DataError(f'{where}: field {field} is {raw[field]!r}; only gelu is implemented')
    if raw.get('conv_pos_batch_norm'):
      raise DataError(f'{where}: field conv_pos_batch_norm is true; only the weight-normalised '
                      'position convolution is implemented')
    if raw.get('add_adapter'):
      raise DataError(f'{where}: field add_adapter is true; adapters are not implemented')
    kwargs: dict[str, Any] = {'model_type': model_type}
    if model_type == 'data2vec-audio':
      kwargs['feat_extract_norm'] = 'layer'
    for f in dataclasses.fields(cls):
      if f.name in kwargs or (f.name not in raw and f.default is not dataclasses.MISSING):
        continue
      if f.name not in raw:
        raise DataError(f'{where}: field {f.name!r} is missing')
      value = raw[f.name]
      if f.name.startswith('conv_') and f.name in ('conv_dim', 'conv_kernel', 'conv_stride'):
        if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, int) and v > 0 for v in value):
          raise DataError(f'{where}: field {f.name!r} must be a list of positive integers')
        value = tuple(value)
      kwargs[f.name] = value
    config = cls(**kwargs)
    if not len(config.conv_dim) == len(config.conv_kernel) == len(config.conv_stride):
      raise DataError(f'{where}: fields conv_dim, conv_kernel and conv_stride differ in length')
    if config.feat_extract_norm not in ('group', 'layer'):
      raise DataError(f'{where}: field feat_extract_norm is {config.feat_extract_norm!r} '
                      '(group | layer)')
    if config.hidden_size % config.num_attention_heads:
      raise DataError(f'{where}: field hidden_size {config.hidden_size} is not divisible by '
                      f'num_attention_heads {config.num_attention_heads}')
    return config

  def frames(self, samples):
    """Output frames of the feature encoder for `samples` input samples."""
    n = np.asarray(samples)
    for k, s in zip(self.conv_kernel, self.conv_stride):
      n = np.maximum((n - k) // s + 1, 0)
    return n

  @property
  def receptive_field(self) -> int:
    """Samples one output frame reads (400 for the usual stack): the shortest input."""
    field = 1
    for k, s in reversed(list(zip(self.conv_kernel, self.conv_stride))):
      field = (field - 1) * s + k
    return field


def normalize_waveforms(waves: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """Each clip standardised over its real samples (Hugging Face's `do_normalize`, variance
  epsilon 1e-7); padding stays zero."""
  waves = np.asarray(waves, np.float32)
  out = np.zeros_like(waves)
  for i, n in enumerate(lengths):
    x = waves[i, :n].astype(np.float64)
    out[i, :n] = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
  return out


def _bucket(relative: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
  """WavLM's (T5-style) log-spaced buckets of relative positions key - query."""
  half = num_buckets // 2
  buckets = (relative > 0).astype(np.int64) * half
  distance = np.abs(relative)
  exact = half // 2
  with np.errstate(divide='ignore'):
    large = exact + (np.log(np.maximum(distance, 1) / exact) / math.log(max_distance / exact)
                     * (half - exact)).astype(np.int64)
  large = np.minimum(large, half - 1)
  return buckets + np.where(distance < exact, distance, large)


def mask_time_spans(rng, x, mask, embed, prob: float, length: int):
  """SpecAugment over time, as wav2vec2 fine-tunes: spans of `length` frames start at each
  real frame with probability `prob / length` (so about `prob` of the frames are covered),
  and the covered real frames of `x` (B, T, D) become `embed`."""
  starts = jax.random.bernoulli(rng, prob / length, mask.shape) & (mask > 0)
  # A frame is covered when a span started within the last `length` frames.
  span = jnp.ones((length,), jnp.float32)
  covered = jax.vmap(lambda s: jnp.convolve(s, span, mode='full')[:s.shape[0]])(
      starts.astype(jnp.float32)) > 0
  covered = covered & (mask > 0)
  return jnp.where(covered[..., None], embed.astype(x.dtype), x)


def _masked_group_norm(x, mask, scale, bias, eps=1e-5):
  """GroupNorm with one group per channel (wav2vec2's first layer), statistics over time
  taken over the real frames only."""
  w = mask[..., None]
  n = jnp.maximum(w.sum(1, keepdims=True), 1.0)
  mean = (x * w).sum(1, keepdims=True) / n
  var = (jnp.square(x - mean) * w).sum(1, keepdims=True) / n
  return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def _conv(features, kernel, stride, name, use_bias=True, groups=1, padding='VALID',
          dtype=jnp.float32):
  return nn.Conv(features, (kernel,), strides=(stride,), padding=padding, use_bias=use_bias,
                 feature_group_count=groups, name=name, dtype=dtype,
                 kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                          ('kernel', None, 'embed')),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                        ('embed',)))


class Wav2Vec2Encoder(nn.Module):
  """Waveforms (B, S) at 16 kHz (normalised as the model expects) and their sample mask
  (B, S) -> the hidden states of every layer (a list of L + 1 arrays (B, T, hidden): the
  input of the first block, then each block's output, the last after the final norm for
  the pre-norm models, as Hugging Face's `output_hidden_states`) and their mask (B, T).

  `mask_time_prob` > 0 (fine-tuning): in training, spans of `mask_time_length` frames
  starting at about that fraction of the frames are replaced by the learnt
  `masked_spec_embed` (SpecAugment over time, as wav2vec2 fine-tunes)."""
  config: Wav2Vec2Config
  dropout: float = 0.0
  mask_time_prob: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, waves, sample_mask, *, train: bool = False):
    c = self.config
    dtype = jnp.dtype(self.dtype)
    gelu = lambda y: jax.nn.gelu(y, approximate=False)  # noqa: E731
    x = (waves * sample_mask).astype(dtype)[..., None]
    lengths = sample_mask.sum(1).astype(jnp.int32)
    for i, (dim, k, s) in enumerate(zip(c.conv_dim, c.conv_kernel, c.conv_stride)):
      x = _conv(dim, k, s, f'conv_{i}', c.conv_bias, dtype=dtype)(x)
      lengths = jnp.maximum((lengths - k) // s + 1, 0)
      mask = (jnp.arange(x.shape[1])[None] < lengths[:, None]).astype(dtype)
      if c.feat_extract_norm == 'layer':
        x = nn.LayerNorm(1e-5, name=f'conv_norm_{i}', dtype=dtype)(x)
      elif i == 0:
        scale = self.param('conv_norm_0_scale', nn.with_logical_partitioning(
            nn.initializers.ones_init(), ('embed',)), (dim,))
        shift = self.param('conv_norm_0_bias', nn.with_logical_partitioning(
            nn.initializers.zeros_init(), ('embed',)), (dim,))
        x = _masked_group_norm(x, mask, scale, shift)
      x = gelu(x) * mask[..., None]
    if c.feat_proj_layer_norm:
      x = nn.LayerNorm(c.layer_norm_eps, name='projection_norm', dtype=dtype)(x)
    x = nn.Dense(
        c.hidden_size, name='projection', dtype=dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 ('embed', 'mlp')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('mlp',)))(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if self.mask_time_prob > 0:
      embed = self.param('masked_spec_embed', nn.with_logical_partitioning(
          nn.initializers.uniform(1.0), ('embed',)), (c.hidden_size,))
      if train:
        x = mask_time_spans(self.make_rng('dropout'), x, mask, embed, self.mask_time_prob,
                            c.mask_time_length)
    x = x * mask[..., None]
    x = x + self._positions(x, mask, dtype)
    if not c.do_stable_layer_norm:
      x = nn.LayerNorm(c.layer_norm_eps, name='encoder_norm', dtype=dtype)(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x) * mask[..., None]
    bias = None
    if c.model_type == 'wavlm':
      length = x.shape[1]
      buckets = _bucket(np.arange(length)[None] - np.arange(length)[:, None], c.num_buckets,
                        c.max_bucket_distance)
      table = self.param('relative_position_embedding', nn.with_logical_partitioning(
          nn.initializers.normal(0.02), (None, 'heads')), (c.num_buckets,
                                                           c.num_attention_heads))
      bias = table[buckets].transpose(2, 0, 1)[None].astype(jnp.float32)  # (1, H, T, T)
    hidden = [x]
    for i in range(c.num_hidden_layers):
      x = TransformerEncoderLayer(
          c.num_attention_heads, c.intermediate_size, self.dropout,
          norm='pre' if c.do_stable_layer_norm else 'post', activation='gelu_exact',
          layer_norm_eps=c.layer_norm_eps, gated_bias=c.model_type == 'wavlm',
          dtype=self.dtype, name=f'layer_{i}')(x, mask, train=train, position_bias=bias)
      hidden.append(x)
    if c.do_stable_layer_norm:
      x = nn.LayerNorm(c.layer_norm_eps, name='norm_out', dtype=dtype)(x) * mask[..., None]
      hidden[-1] = x
    return hidden, mask

  def _positions(self, x, mask, dtype):
    """The convolutional relative position embedding (zero at padded frames' inputs)."""
    c = self.config
    gelu = lambda y: jax.nn.gelu(y, approximate=False)  # noqa: E731
    if c.model_type == 'data2vec-audio':
      k = c.conv_pos_kernel_size
      h = x
      for i in range(c.num_conv_pos_embeddings):
        h = _conv(c.hidden_size, k, 1, f'position_conv_{i}', groups=c.num_conv_pos_embedding_groups,
                  padding=((k // 2, k // 2),), dtype=dtype)(h)
        if k % 2 == 0:
          h = h[:, :-1]
        h = gelu(nn.LayerNorm(1e-5, use_scale=False, use_bias=False,
                              name=f'position_norm_{i}', dtype=dtype)(h))
        h = h * mask[..., None]  # Exact under padding: the next conv reads zeros there.
      return h
    k = c.num_conv_pos_embeddings
    h = _conv(c.hidden_size, k, 1, 'position_conv', groups=c.num_conv_pos_embedding_groups,
              padding=((k // 2, k // 2),), dtype=dtype)(x)
    if k % 2 == 0:
      h = h[:, :-1]
    return gelu(h)



# -- weights ------------------------------------------------------------------------------------

_PREFIXES = ('wav2vec2.', 'hubert.', 'data2vec_audio.', 'wavlm.')


def read_config(folder: str) -> Wav2Vec2Config:
  path = os.path.join(folder, 'config.json')
  return Wav2Vec2Config.from_dict(hf.read_json(path), path)


def do_normalize(folder: str) -> bool:
  """The folder's `preprocessor_config.json` `do_normalize` (True when absent: the
  feature extractor's default)."""
  path = os.path.join(folder, 'preprocessor_config.json')
  if not os.path.isfile(path):
    return True
  value = hf.read_json(path, 'preprocessor config').get('do_normalize', True)
  if not isinstance(value, bool):
    raise DataError(f'{path}: field do_normalize must be true or false, got {value!r}')
  return value


def _weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
  """PyTorch weight_norm(dim=2) of a (out, in, k) kernel: g * v / ||v|| over (out, in)."""
  norm = np.sqrt((v.astype(np.float64) ** 2).sum(axis=(0, 1), keepdims=True))
  return (g * v / norm).astype(np.float32)


def load(folder: str) -> tuple[Wav2Vec2Config, dict[str, Any]]:
  """(config, parameter tree of `Wav2Vec2Encoder`) from a Hugging Face folder."""
  config = read_config(folder)
  tensors = hf.read_tensors(folder)
  for prefix in _PREFIXES:
    if any(k.startswith(prefix) for k in tensors):
      tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
      break
  return config, convert(tensors, config, folder)


def convert(t: dict[str, np.ndarray], c: Wav2Vec2Config, where: str) -> dict[str, Any]:
  """Hugging Face tensor names (without the model prefix) -> this module's tree."""

  def take(name):
    if name not in t:
      raise DataError(f'{where}: tensor {name!r} is missing (is this a {c.model_type} model?)')
    return np.asarray(t[name], np.float32)
  dense = lambda n: {'kernel': take(f'{n}.weight').T, 'bias': take(f'{n}.bias')}  # noqa: E731
  norm = lambda n: {'scale': take(f'{n}.weight'), 'bias': take(f'{n}.bias')}  # noqa: E731
  conv_kernel = lambda w: np.ascontiguousarray(w.transpose(2, 1, 0))  # noqa: E731
  p: dict[str, Any] = {}
  for i in range(len(c.conv_dim)):
    layer = f'feature_extractor.conv_layers.{i}.'
    p[f'conv_{i}'] = {'kernel': conv_kernel(take(layer + 'conv.weight'))}
    if c.conv_bias:
      p[f'conv_{i}']['bias'] = take(layer + 'conv.bias')
    if c.feat_extract_norm == 'layer':
      p[f'conv_norm_{i}'] = norm(layer + 'layer_norm')
    elif i == 0:
      p['conv_norm_0_scale'] = take(layer + 'layer_norm.weight')
      p['conv_norm_0_bias'] = take(layer + 'layer_norm.bias')
  if c.feat_proj_layer_norm:
    p['projection_norm'] = norm('feature_projection.layer_norm')
  p['projection'] = dense('feature_projection.projection')
  if 'masked_spec_embed' in t:
    p['masked_spec_embed'] = take('masked_spec_embed')
  if c.model_type == 'data2vec-audio':
    for i in range(c.num_conv_pos_embeddings):
      layer = f'encoder.pos_conv_embed.layers.{i}.conv.'
      p[f'position_conv_{i}'] = {'kernel': conv_kernel(take(layer + 'weight')),
                                 'bias': take(layer + 'bias')}
  else:
    prefix = 'encoder.pos_conv_embed.conv.'
    if prefix + 'weight_g' in t:
      g, v = take(prefix + 'weight_g'), take(prefix + 'weight_v')
    else:
      g = take(prefix + 'parametrizations.weight.original0')
      v = take(prefix + 'parametrizations.weight.original1')
    p['position_conv'] = {'kernel': conv_kernel(_weight_norm(g, v)),
                          'bias': take(prefix + 'bias')}
  # Before the blocks (post-norm models) or after them (`norm_out`, the pre-norm ones).
  p['norm_out' if c.do_stable_layer_norm else 'encoder_norm'] = norm('encoder.layer_norm')
  if c.model_type == 'wavlm':
    p['relative_position_embedding'] = take('encoder.layers.0.attention.rel_attn_embed.weight')
  for i in range(c.num_hidden_layers):
    q = f'encoder.layers.{i}.'
    layer = {'query': dense(q + 'attention.q_proj'), 'key': dense(q + 'attention.k_proj'),
             'value': dense(q + 'attention.v_proj'),
             'attention_out': dense(q + 'attention.out_proj'),
             'norm_1': norm(q + 'layer_norm'),
             'mlp_in': dense(q + 'feed_forward.intermediate_dense'),
             'mlp_out': dense(q + 'feed_forward.output_dense'),
             'norm_2': norm(q + 'final_layer_norm')}
    if c.model_type == 'wavlm':
      layer['gru_rel_pos_linear'] = dense(q + 'attention.gru_rel_pos_linear')
      layer['gru_rel_pos_const'] = take(q + 'attention.gru_rel_pos_const').reshape(-1)
    p[f'layer_{i}'] = layer
  return jax.tree.map(np.ascontiguousarray, p)
