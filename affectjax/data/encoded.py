"""Speech corpora through a pretrained speech encoder (`config.data.encoder`).

The speech data modules (RAVDESS, the RAVDESS audio-visual pairs, EmoDB) give the model
log-mel frames by default; with `config.data.encoder` naming a speech encoder
(`affectjax/encoders/speech.py`: 'whisper-base', or a Hugging Face or CTranslate2 folder)
their `audio` field is instead, by `config.data.encoder_mode`:

* `frozen`: the hidden states of every layer, `audio` (L, T, D) float16 with
  `frame_mask` (T,): the encoder runs once over the corpus (with progress) and the result
  is cached in `~/.cache/affectjax/features`, keyed by the weights' content, the audio
  files' content and every setting that changes a feature. `encoder_pool` encoder frames
  (20 ms each) are averaged into one stored frame (4: 80 ms, a quarter of the memory).
  `encoder_norm`: `none`; `train` standardises every layer and dimension with the training
  split's statistics over its real frames (saved with the run for `predict`); `speaker`
  standardises each speaker's features over all that speaker's frames (test speakers'
  audio included, never their labels: per-speaker normalisation, which tables must name).
* `finetune`: the encoder's own input, computed in the grain pipeline batch by batch:
  Whisper's log-mel frames `audio` (F, n_mels), or the waveform `audio` (S,) for the
  wav2vec2 family (standardised per clip when its preprocessor says so), with
  `frame_mask` marking real frames (samples). The model runs the encoder
  (`models/contrastive.py`, tower kind `speech_encoder`) and trains it.

`encoder_pad_seconds=30` (Whisper only) zero-pads every clip to Whisper's 30-s training
window (the clip's own frames are still the ones pooled), at several times the cost.
"""

from __future__ import annotations

import json
import os

import numpy as np

from affectjax import errors
from affectjax.data import audio, base

MODES = ('frozen', 'finetune')
NORMS = ('none', 'train', 'speaker')


def enabled(d) -> bool:
  return bool(d.get('encoder', ''))


def spec_of(d):
  """The resolved encoder of `config.data`, its fields checked."""
  from affectjax.encoders import speech
  if d.encoder_mode not in MODES:
    raise errors.DataError(f'config.data.encoder_mode: {d.encoder_mode!r} ({" | ".join(MODES)})')
  if not isinstance(d.encoder_pool, int) or d.encoder_pool < 1:
    raise errors.DataError(f'config.data.encoder_pool: must be an integer >= 1, got '
                         f'{d.encoder_pool!r}')
  if d.encoder_norm not in NORMS:
    raise errors.DataError(f'config.data.encoder_norm: {d.encoder_norm!r} ({" | ".join(NORMS)})')
  if d.encoder_norm != 'none' and d.encoder_mode != 'frozen':
    raise errors.DataError('config.data.encoder_norm: per-speaker normalisation applies to '
                         'frozen features (encoder_mode=frozen)')
  spec = speech.resolve(d.encoder)
  if d.encoder_pad_seconds not in (0, 0.0, 30, 30.0) or (
      d.encoder_pad_seconds and spec.family != 'whisper'):
    raise errors.DataError(f'config.data.encoder_pad_seconds: {d.encoder_pad_seconds!r} (0, or '
                         '30 for Whisper)')
  if d.max_seconds <= 0 or d.max_seconds > 30:
    raise errors.DataError(f'config.data.max_seconds: {d.max_seconds!r} must be in (0, 30] for '
                         'a speech encoder')
  return spec


def check_init(config) -> None:
  """A fine-tuned encoder's architecture comes from `config.data.encoder`: a speech source
  in `config.init.hf` must be that same source."""
  from affectjax import transfer
  from affectjax.encoders import speech
  for target, source in transfer.hf_sources(config):
    if speech.is_speech_source(source) and source != config.data.encoder:
      raise errors.DataError(f'config.init.hf: {target!r} loads {source!r} but '
                           f'config.data.encoder={config.data.encoder!r} (the model is built '
                           'from the data\'s encoder: name the same source in both)')


def model_inputs(d) -> dict:
  """What the model needs to know of the encoder: its source when it runs it."""
  return {'speech_encoder': d.encoder if d.encoder_mode == 'finetune' else ''}


def preprocess(d, spec) -> dict:
  """The run card's description: `features_of_waves` repeats it on new audio."""
  return {'kind': 'encoded', 'encoder': d.encoder, 'fingerprint': spec.fingerprint(),
          'mode': d.encoder_mode, 'pool': int(d.encoder_pool),
          'pad_seconds': float(d.encoder_pad_seconds), 'norm': d.encoder_norm,
          'max_seconds': float(d.max_seconds), 'top_db': float(d.top_db),
          'sample_rate': audio.SAMPLE_RATE}


def _cache_path(spec, files: list[str], settings: dict) -> str:
  key = audio.files_digest(files, json.dumps(settings, sort_keys=True))
  return os.path.join(audio.cache_dir(), 'features', f'{spec.fingerprint()}__{key}.npz')


def frozen(d, spec, clips: list[np.ndarray], files: list[str], what: str):
  """(features (N, L, T, D) float16, frame mask (N, T)) of decoded clips, from the cache
  or computed once (written atomically)."""
  from affectjax import workdir
  from affectjax.encoders import speech
  settings = {'pool': int(d.encoder_pool), 'pad_seconds': float(d.encoder_pad_seconds),
              'max_seconds': float(d.max_seconds), 'top_db': float(d.top_db), 'version': 1}
  path = _cache_path(spec, files, settings)
  if os.path.exists(path):
    try:
      with np.load(path, allow_pickle=False) as z:
        return z['features'], z['frame_mask']
    except (OSError, ValueError, KeyError) as e:
      raise errors.DataError(f'{path}: unreadable feature cache ({e}); delete it to recompute') \
          from None
  features, mask = speech.frozen_features(
      spec, clips, int(d.max_seconds * audio.SAMPLE_RATE), int(d.encoder_pool),
      float(d.encoder_pad_seconds),
      what=f'{what}: {len(clips)} clips through {spec.name} once (features cached in '
           f'{os.path.dirname(path)})')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  workdir.write_atomic(path, 'the speech-encoder feature cache', lambda f: np.savez(
      f, features=features, frame_mask=mask), mode='wb')
  return features, mask


def statistics(features: np.ndarray, mask: np.ndarray, batch: int = 64):
  """Per layer and dimension (mean, std) (L, D) over the real frames of (N, L, T, D)
  features, accumulated in float64 a batch of clips at a time."""
  total = np.zeros(features.shape[1:2] + features.shape[3:])
  square, count = np.zeros_like(total), 0.0
  for start in range(0, len(features), batch):
    x = features[start:start + batch].astype(np.float64)
    w = mask[start:start + batch][:, None, :, None]
    total += (x * w).sum((0, 2))
    square += (np.square(x) * w).sum((0, 2))
    count += float(w.sum())
  mean = total / max(count, 1.0)
  std = np.sqrt(np.maximum(square / max(count, 1.0) - mean ** 2, 0.0) + 1e-5)
  return mean.astype(np.float32), std.astype(np.float32)


def standardised(features: np.ndarray, mask: np.ndarray, mean, std) -> np.ndarray:
  """(features - mean) / std per layer and dimension, zero on padded frames (float16)."""
  out = np.empty_like(features)
  for start in range(0, len(features), 64):
    x = features[start:start + 64].astype(np.float32)
    w = mask[start:start + 64][:, None, :, None]
    out[start:start + 64] = ((x - mean[:, None]) / std[:, None] * w).astype(np.float16)
  return out


def speaker_normalised(features: np.ndarray, mask: np.ndarray, speakers) -> np.ndarray:
  """Each speaker's features standardised per layer and dimension over the real frames
  of all that speaker's clips."""
  out = np.empty_like(features)
  speakers = np.asarray(speakers)
  for who in np.unique(speakers):
    rows = np.flatnonzero(speakers == who)
    out[rows] = standardised(features[rows], mask[rows], *statistics(features[rows],
                                                                     mask[rows]))
  return out


class InputSource(base.ComputedSource):
  """Clips in memory (int16, `audio.pack`); `get_batch` returns the encoder's own input
  (`audio`: Whisper's log-mel or the waveform) with `frame_mask` and `label`, plus any
  `extra` per-clip arrays: the fine-tuning pipeline, computed batch by batch."""

  def __init__(self, spec, waves, lengths, labels, d, extra=None):
    self.spec, self.waves, self.lengths, self.labels = spec, waves, lengths, labels
    self.extra = dict(extra or {})
    self.pad_seconds = float(d.encoder_pad_seconds)
    self.length = int(spec.input_length(int(d.max_seconds * audio.SAMPLE_RATE),
                                        self.pad_seconds))

  def __len__(self) -> int:
    return len(self.labels)

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    indices = np.asarray(indices)
    inputs, mask = self.spec.front_end(audio.unpack(self.waves[indices]), self.lengths[indices],
                                       self.length, self.pad_seconds)
    return {'audio': inputs, 'frame_mask': mask, 'label': self.labels[indices],
            **{k: v[indices] for k, v in self.extra.items()}}


class Corpus:
  """Every clip of a corpus through the encoder of `config.data`: `source(rows, labels,
  extra)` gives the split sources (frozen features, or encoder inputs)."""

  def __init__(self, config, clips: list[np.ndarray], files: list[str], speakers, what: str,
               train_rows=None, statistics_from=None):
    """`train_rows`: the training split's clips, whose statistics `encoder_norm='train'`
    standardises with (kept in `self.statistics` for the run card); or `statistics_from`,
    another corpus's (a cross-corpus test set standardised with the training corpus's)."""
    d = config.data
    check_init(config)
    self.d, self.spec = d, spec_of(d)
    self.statistics = {}
    short = [f for f, c in zip(files, clips) if len(c) < self.spec.min_samples]
    if short:
      raise errors.DataError(f'{short[0]}: field audio has fewer samples after trimming than '
                           f'{self.spec.name} reads ({self.spec.min_samples}); '
                           f'{len(short)} such clips')
    if d.encoder_mode == 'frozen':
      self.features, self.mask = frozen(d, self.spec, clips, files, what)
      if d.encoder_norm == 'speaker':
        self.features = speaker_normalised(self.features, self.mask, speakers)
      elif d.encoder_norm == 'train':
        if statistics_from is not None:
          mean, std = statistics_from['encoder_mean'], statistics_from['encoder_std']
        else:
          rows = np.asarray(train_rows)
          mean, std = statistics(self.features[rows], self.mask[rows])
        self.features = standardised(self.features, self.mask, mean, std)
        self.statistics = {'encoder_mean': mean, 'encoder_std': std}
    else:
      self.waves, self.lengths = audio.pack(clips, int(d.max_seconds * audio.SAMPLE_RATE))

  def source(self, rows, labels, extra=None):
    rows = np.asarray(rows)
    extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
    if self.d.encoder_mode == 'frozen':
      return base.ArraySource({'audio': self.features[rows], 'frame_mask': self.mask[rows],
                               'label': labels, **extra})
    return InputSource(self.spec, self.waves[rows], self.lengths[rows], labels, self.d, extra)


INPUTS = 'audio files'  # What a run of this module's pipeline predicts from.


def inputs_from_files(files: list[str], pre: dict, arrays: dict) -> dict:
  """`inputs_from_waves` of audio files, decoded and resampled to 16 kHz."""
  return inputs_from_waves([audio.read_audio(f) for f in files], files, pre, arrays)


def inputs_from_waves(waves: list[np.ndarray], names: list[str], pre: dict,
                      arrays: dict) -> dict:
  """{'audio', 'frame_mask'} of new 16 kHz clips through a run's encoder pipeline (its run
  card's `preprocess`): silence-trimmed and checked as in training, cut to its length,
  then the frozen features or the encoder input; with per-speaker normalisation the clips
  given together count as one speaker, with `train` the run's saved statistics
  (`arrays`). The encoder's weights must be those the run was trained on (the
  fingerprint is compared)."""
  import ml_collections
  from affectjax.encoders import speech
  spec = speech.resolve(pre['encoder'], 'run.json: preprocess.encoder')
  if spec.fingerprint() != pre['fingerprint']:
    raise errors.DataError(f'run.json: field preprocess.fingerprint is {pre["fingerprint"]} but '
                         f'{pre["encoder"]} now holds {spec.fingerprint()}: these are not the '
                         'weights the run was trained on')
  clips = [audio.prepare_clip(x, name, pre['top_db'], spec.min_samples)
           for x, name in zip(waves, names)]
  max_samples = int(pre['max_seconds'] * audio.SAMPLE_RATE)
  if pre['mode'] == 'frozen':
    features, mask = speech.frozen_features(spec, clips, max_samples, pre['pool'],
                                            pre['pad_seconds'], what=f'encoding {len(clips)} '
                                            f'clips with {spec.name}')
    if pre['norm'] == 'speaker':
      features = speaker_normalised(features, mask, np.zeros(len(clips)))
    elif pre['norm'] == 'train':
      features = standardised(features, mask, arrays['encoder_mean'], arrays['encoder_std'])
    return {'audio': features, 'frame_mask': mask}
  d = ml_collections.ConfigDict({'encoder_pad_seconds': pre['pad_seconds'],
                                 'max_seconds': pre['max_seconds']})
  waves_, lengths = audio.pack(clips, max_samples)
  batch = InputSource(spec, waves_, lengths, np.zeros(len(clips), np.int32), d).get_batch(
      np.arange(len(clips)))
  return {'audio': batch['audio'], 'frame_mask': batch['frame_mask']}
