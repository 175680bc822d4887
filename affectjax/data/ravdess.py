"""RAVDESS speech for frame-level speech emotion recognition, with EmoDB for cross-corpus tests.

Reads the audio files themselves (`<data dir>/ravdess/speech_16k/Actor_XX/*.flac`,
`<data dir>/emodb/wav/*.wav`; any rate, resampled to 16 kHz), trims leading and
trailing silence, and keeps the waveforms in memory. Log-mel frames are computed in
the grain pipeline, batch by batch, by `LogMelSource.get_batch` (25 ms Hann windows,
20 ms hop by default, 64 HTK-mel bands, log, mean/variance normalisation per band over real
frames); `frame_mask` marks the real frames of each clip. `config.data.audio_norm` picks the
statistics: `clip` (default; each clip its own: level and spectral shape are lost), `train`
(per band over the training actors' real frames, applied to every split and to EmoDB:
level and spectral shape stay), or `speaker` (each speaker's statistics over all of that
speaker's clips, labels unused: per-speaker normalisation, a known speaker-independent
technique that reads the test speakers' unlabelled audio, so tables name it).

Splits are speaker-independent: `config.data.fold` (1-6) picks the test actors of
`ravdess/actor_folds.json` (the six folds used by HiCMAE); the first
`config.data.num_valid` (2, or 4 = the whole next fold) actors of the next fold are
validation; the others train. `config.data.unlabelled = ('emodb',)` adds every EmoDB clip,
label -1, to the training split: for self-supervised pretraining only. RAVDESS file names are
modality-channel-emotion-intensity-statement-repetition-actor; emotions 01-08 are
neutral, calm, happy, sad, angry, fearful, disgust, surprised.

EmoDB (`emodb_source`) keeps the six emotions it shares with RAVDESS (boredom has no
counterpart; calm and surprised have none in EmoDB), labelled with RAVDESS indices.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os

import numpy as np

from affectjax.data import base, prepared
from affectjax import workdir

EMOTIONS = ('neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised')
# EmoDB emotion letter (character 6 of the file name) -> RAVDESS class index.
EMODB_TO_RAVDESS = {'N': 0, 'F': 2, 'T': 3, 'W': 4, 'A': 5, 'E': 6}
SHARED_CLASSES = tuple(sorted(EMODB_TO_RAVDESS.values()))
SAMPLE_RATE = 16000


def parse_ravdess_name(path: str, media: tuple[int, ...] = (3,)) -> tuple[int, int]:
  """(emotion class 0-7, actor 1-24) from a RAVDESS file name whose modality field is
  in `media` (01 audio-visual, 02 video only, 03 audio only)."""
  parts = os.path.splitext(os.path.basename(path))[0].split('-')
  try:
    if len(parts) != 7:
      raise ValueError
    modality, emotion, actor = int(parts[0]), int(parts[2]), int(parts[6])
  except ValueError:
    raise base.DataError(f'{path}: not a RAVDESS name (modality-channel-emotion-intensity-'
                         'statement-repetition-actor)') from None
  if modality not in media or not 1 <= emotion <= 8 or not 1 <= actor <= 24:
    raise base.DataError(f'{path}: field emotion/actor/modality out of range '
                         f'(modality {modality}, emotion {emotion}, actor {actor})')
  return emotion - 1, actor


def read_audio(path: str, rate: int = SAMPLE_RATE) -> np.ndarray:
  """Mono float32 samples at `rate`, or a DataError naming the file."""
  import soundfile
  from scipy import signal
  try:
    x, sr = soundfile.read(path, dtype='float32', always_2d=True)
  except Exception as e:  # soundfile raises its own error types for corrupt files.
    raise base.DataError(f'{path}: cannot decode audio ({e})') from None
  x = x.mean(axis=1)
  if not len(x):
    raise base.DataError(f'{path}: audio has no samples')
  if not np.all(np.isfinite(x)):
    raise base.DataError(f'{path}: audio has NaN/inf samples')
  if sr != rate:
    g = math.gcd(sr, rate)
    x = signal.resample_poly(x, rate // g, sr // g).astype(np.float32)
  return x


def trim_silence(x: np.ndarray, top_db: float = 40.0, frame: int = 400, hop: int = 160):
  """Drops leading and trailing frames more than `top_db` below the loudest frame."""
  if len(x) < frame:
    return x
  n = 1 + (len(x) - frame) // hop
  idx = np.arange(frame)[None] + hop * np.arange(n)[:, None]
  energy = 10 * np.log10(np.mean(x[idx] ** 2, axis=1) + 1e-10)
  loud = np.flatnonzero(energy > energy.max() - top_db)
  return x[loud[0] * hop:loud[-1] * hop + frame]


def mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  """Triangular filters on the HTK mel scale, (n_fft // 2 + 1, n_mels)."""
  mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
  hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
  edges = hz(np.linspace(mel(0.0), mel(rate / 2), n_mels + 2))
  freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
  lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
  up = (freqs[:, None] - lower) / (center - lower)
  down = (upper - freqs[:, None]) / (upper - center)
  return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel(waves: np.ndarray, lengths: np.ndarray, *, rate: int = SAMPLE_RATE,
            window_ms: float = 25.0, hop_ms: float = 10.0, n_mels: int = 64,
            normalize: bool = True):
  """Log-mel frames of a batch of padded waveforms.

  Args:
    waves: (B, S) float samples, zero past `lengths`.
    lengths: (B,) samples per clip.
  Returns:
    (features (B, F, n_mels) float32, frame_mask (B, F) float32); features are
    zero at padded frames and, with `normalize`, have zero mean and unit variance
    per clip and band over the clip's real frames.
  """
  n_fft = int(rate * window_ms / 1000)
  hop = int(rate * hop_ms / 1000)
  num = 1 + (waves.shape[1] - n_fft) // hop
  idx = np.arange(n_fft)[None] + hop * np.arange(num)[:, None]
  frames = waves[:, idx] * np.hanning(n_fft + 1)[:-1].astype(np.float32)
  power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
  feats = np.log(power.astype(np.float32) @ mel_filterbank(rate, n_fft, n_mels) + 1e-6)
  real = 1 + np.maximum(lengths - n_fft, 0) // hop
  mask = (np.arange(num)[None] < real[:, None]).astype(np.float32)
  w = mask[..., None]
  if not normalize:
    return (feats * w).astype(np.float32), mask
  mean = (feats * w).sum(1, keepdims=True) / w.sum(1, keepdims=True)
  var = (((feats - mean) * w) ** 2).sum(1, keepdims=True) / w.sum(1, keepdims=True)
  return ((feats - mean) / np.sqrt(var + 1e-5) * w).astype(np.float32), mask


class LogMelSource(base.ArraySource):
  """Waveforms in memory; `get_batch` returns log-mel frames (`audio`), `frame_mask`
  and `label` (plus any `extra` per-clip arrays, e.g. the same clip's face features), so
  the features are computed inside the grain pipeline."""

  def __init__(self, waves: np.ndarray, lengths: np.ndarray, labels: np.ndarray,
               feature_kwargs: dict, extra: dict[str, np.ndarray] | None = None,
               stats: tuple[np.ndarray, np.ndarray] | None = None):
    """`stats`: per-clip (mean, std) (N, n_mels) to standardise with instead of the
    clip's own (`speaker_statistics`)."""
    self.extra = tuple(extra or ())
    arrays = {'wave': waves, 'length': lengths, 'label': labels, **(extra or {})}
    if stats is not None:
      arrays['norm_mean'], arrays['norm_std'] = stats
    super().__init__(arrays)
    self.feature_kwargs = dict(feature_kwargs, normalize=stats is None and
                               feature_kwargs.get('normalize', True))
    self.stats = stats is not None

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    waves = self.arrays['wave'][indices].astype(np.float32) / 32767.0
    feats, mask = log_mel(waves, self.arrays['length'][indices], **self.feature_kwargs)
    if self.stats:
      mean = self.arrays['norm_mean'][indices][:, None]
      std = self.arrays['norm_std'][indices][:, None]
      feats = ((feats - mean) / std * mask[..., None]).astype(np.float32)
    return {'audio': feats, 'frame_mask': mask, 'label': self.arrays['label'][indices],
            **{k: self.arrays[k][indices] for k in self.extra}}

  def __getitem__(self, i):
    return {k: v[0] for k, v in self.get_batch(np.array([i])).items()}

  def element_spec(self) -> dict:
    return {k: (v.shape[1:], v.dtype) for k, v in self.get_batch(np.array([0])).items()}


def speaker_statistics(waves: np.ndarray, lengths: np.ndarray, speakers: np.ndarray,
                       feature_kwargs: dict, batch: int = 64):
  """Per-clip (mean, std) (N, n_mels): each speaker's log-mel statistics per band over
  the real frames of all that speaker's clips (no labels read)."""
  kwargs = dict(feature_kwargs, normalize=False)
  names = np.unique(speakers)
  n_mels = int(kwargs.get('n_mels', 64))
  total = np.zeros((len(names), n_mels))
  square = np.zeros((len(names), n_mels))
  count = np.zeros(len(names))
  which = np.searchsorted(names, speakers)
  for start in range(0, len(waves), batch):
    rows = slice(start, start + batch)
    feats, mask = log_mel(waves[rows].astype(np.float32) / 32767.0, lengths[rows], **kwargs)
    feats = feats.astype(np.float64)
    np.add.at(total, which[rows], feats.sum(1))  # Padded frames are zero.
    np.add.at(square, which[rows], (feats ** 2).sum(1))
    np.add.at(count, which[rows], mask.sum(1))
  mean = total / count[:, None]
  std = np.sqrt(np.maximum(square / count[:, None] - mean ** 2, 0.0) + 1e-5)
  return mean[which].astype(np.float32), std[which].astype(np.float32)


NORMS = ('clip', 'train', 'speaker')


def _norm(d) -> str:
  norm = d.get('audio_norm', 'clip')  # Runs saved before the option read per clip.
  if norm not in NORMS:
    raise base.DataError(f'config.data.audio_norm: {norm!r} ({" | ".join(NORMS)})')
  return norm


def _stats(d, waves, lengths, speakers, train=None):
  """Per-clip (mean, std) for `config.data.audio_norm`, or None for per-clip statistics.
  `train`: the training split's (mean, std) per band (for `train`)."""
  norm = _norm(d)
  if norm == 'clip':
    return None
  if norm == 'train':
    return tuple(np.broadcast_to(x, (len(waves), len(x))).copy() for x in train)
  return speaker_statistics(waves, lengths, speakers, _features(d))


def _train_statistics(d, waves, lengths):
  """Per-band (mean, std) over the real frames of the training clips given."""
  mean, std = speaker_statistics(waves, lengths, np.zeros(len(waves), np.int32),
                                 _features(d))
  return mean[0], std[0]


def _ravdess(config):
  """(root, waveforms, lengths, labels, actors, {split: actors}) of the fold."""
  d = config.data
  root = os.path.join(prepared.data_dir(config, 'ravdess/speech_16k/Actor_XX/*.flac'),
                      'ravdess')
  files = sorted(glob.glob(os.path.join(root, 'speech_16k', 'Actor_*', '*.*')))
  if not files:
    raise base.DataError(f'{root}/speech_16k: no audio files (expected Actor_XX/*.flac)')
  labels, actors = zip(*(parse_ravdess_name(f) for f in files))
  labels, actors = np.asarray(labels, np.int32), np.asarray(actors)
  split_actors = fold_actors(read_folds(os.path.join(root, 'actor_folds.json')), d.fold,
                             d.num_valid)
  waves, lengths = _pad(_decoded(files, d.top_db), int(d.max_seconds * SAMPLE_RATE))
  return root, waves, lengths, labels, actors, split_actors


def _training_statistics(config):
  """The fold's training-actor statistics when `audio_norm='train'`, else None."""
  if _norm(config.data) != 'train':
    return None
  _, waves, lengths, _, actors, split_actors = _ravdess(config)
  train = np.isin(actors, split_actors['train'])
  return _train_statistics(config.data, waves[train], lengths[train])


def _pad(clips: list[np.ndarray], max_samples: int) -> tuple[np.ndarray, np.ndarray]:
  waves = np.zeros((len(clips), max_samples), np.int16)
  lengths = np.zeros(len(clips), np.int32)
  for i, x in enumerate(clips):
    x = x[:max_samples]
    waves[i, :len(x)] = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    lengths[i] = len(x)
  return waves, lengths


def _decoded(files: list[str], top_db: float) -> list[np.ndarray]:
  """Decoded, resampled, trimmed clips; cached as one .npz (written atomically) keyed by
  the file list, sizes and modification times."""
  key = hashlib.sha256(json.dumps([top_db] + [
      (os.path.abspath(f), os.path.getsize(f), os.path.getmtime(f)) for f in files]).encode())
  path = os.path.join(prepared.cache_dir(), 'audio', f'{key.hexdigest()[:20]}.npz')
  if os.path.exists(path):
    with np.load(path) as z:
      flat, offsets = z['samples'], z['offsets']
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
  clips = [trim_silence(read_audio(f), top_db) for f in files]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  workdir.write_atomic(path, 'the decoded-audio cache', lambda f: np.savez(
      f, samples=np.concatenate(clips), offsets=np.cumsum([0] + [len(c) for c in clips])),
      mode='wb')
  return clips


def read_folds(path: str) -> dict[int, list[int]]:
  """Test actors per fold (1-6) from actor_folds.json."""
  try:
    with open(path) as f:
      raw = json.load(f)['test_actors_per_fold']
    folds = {int(k.replace('split', '')): [int(a) for a in v] for k, v in raw.items()}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise base.DataError(f'{path}: field test_actors_per_fold unreadable ({e})') from None
  return dict(sorted(folds.items()))


def fold_actors(folds: dict[int, list[int]], fold: int,
                num_valid: int = 2) -> dict[str, list[int]]:
  """Train / valid / test actors: test = the fold's actors, valid = the first `num_valid`
  actors of the next fold (so validation speakers are never tested on), train = the rest."""
  if fold not in folds:
    raise base.DataError(f'config.data.fold: {fold} is not one of {sorted(folds)}')
  keys = sorted(folds)
  test = folds[fold]
  valid = folds[keys[(keys.index(fold) + 1) % len(keys)]][:num_valid]
  train = [a for a in range(1, 25) if a not in test and a not in valid]
  return {'train': train, 'valid': valid, 'test': test}


def _features(d) -> dict:
  return {'window_ms': d.window_ms, 'hop_ms': d.hop_ms, 'n_mels': d.n_mels}


def load(config) -> base.Dataset:
  d = config.data
  root, waves, lengths, labels, actors, split_actors = _ravdess(config)
  train = None
  if _norm(d) == 'train':
    rows = np.isin(actors, split_actors['train'])
    train = _train_statistics(d, waves[rows], lengths[rows])
  stats = _stats(d, waves, lengths, actors, train)
  splits = {}
  for split, who in split_actors.items():
    idx = np.flatnonzero(np.isin(actors, who))
    splits[split] = LogMelSource(waves[idx], lengths[idx], labels[idx], _features(d),
                                 stats=None if stats is None else (stats[0][idx],
                                                                   stats[1][idx]))
  extra = [_unlabelled_emodb(config)] if 'emodb' in d.unlabelled else []
  if extra:
    first = splits['train'].arrays
    parts = [(first['wave'], first['length'], first['label'],
              None if stats is None else (first['norm_mean'], first['norm_std']))]
    for w, n, speakers in extra:
      parts.append((w, n, np.full(len(n), -1, np.int32), _stats(d, w, n, speakers, train)))
    splits['train'] = LogMelSource(
        *(np.concatenate([p[i] for p in parts]) for i in range(3)), _features(d),
        stats=None if stats is None else tuple(np.concatenate([p[3][i] for p in parts])
                                              for i in range(2)))
  return base.Dataset(splits, ('audio',), len(EMOTIONS), f'{root}/speech_16k fold {d.fold}',
                      EMOTIONS, preprocess=speech_preprocess(d),
                      preprocess_arrays={} if train is None else {'mean': train[0],
                                                                  'std': train[1]})


def speech_preprocess(d) -> dict:
  """What `features_of_files` needs to repeat this pipeline on new audio files."""
  return {'kind': 'speech', 'sample_rate': SAMPLE_RATE, 'top_db': float(d.top_db),
          'max_seconds': float(d.max_seconds), 'audio_norm': _norm(d), **{
              k: float(v) if k != 'n_mels' else int(v) for k, v in _features(d).items()}}


def features_of_files(files: list[str], preprocess: dict, arrays: dict) -> dict:
  """{'audio', 'frame_mask'} of audio files through the pipeline a run was trained with
  (`speech_preprocess`): decoded and resampled to 16 kHz, silence trimmed, cut to
  `max_seconds`, log-mel, normalised as the run was (`train`: its saved training
  statistics; `speaker`: the files given together are taken as one speaker)."""
  clips = []
  for f in files:
    x = trim_silence(read_audio(f, preprocess['sample_rate']), preprocess['top_db'])
    if not len(x):
      raise base.DataError(f'{f}: field audio is empty (or silent throughout)')
    clips.append(x)
  waves, lengths = _pad(clips, int(preprocess['max_seconds'] * preprocess['sample_rate']))
  kwargs = {k: preprocess[k] for k in ('window_ms', 'hop_ms', 'n_mels')}
  if preprocess['audio_norm'] == 'clip':
    stats = None
  elif preprocess['audio_norm'] == 'train':
    stats = tuple(np.broadcast_to(arrays[k], (len(files), len(arrays[k]))) for k in
                  ('mean', 'std'))
  else:
    stats = speaker_statistics(waves, lengths, np.zeros(len(files), np.int32), kwargs)
  source = LogMelSource(waves, lengths, np.zeros(len(files), np.int32), kwargs, stats=stats)
  batch = source.get_batch(np.arange(len(files)))
  return {'audio': batch['audio'], 'frame_mask': batch['frame_mask']}


def _emodb_files(config) -> list[str]:
  root = os.path.join(prepared.data_dir(config, 'emodb/wav/*.wav'), 'emodb', 'wav')
  files = sorted(glob.glob(os.path.join(root, '*.wav')))
  if not files:
    raise base.DataError(f'{root}: no .wav files')
  return files


def _emodb_speakers(files: list[str]) -> np.ndarray:
  """EmoDB's speaker: the first two characters of the file name (03a01Fa.wav: 03)."""
  return np.asarray([os.path.basename(f)[:2] for f in files])


def _unlabelled_emodb(config):
  """Every EmoDB clip (all seven emotions, boredom included): waveforms, lengths and
  speakers."""
  d = config.data
  files = _emodb_files(config)
  return (*_pad(_decoded(files, d.top_db), int(d.max_seconds * SAMPLE_RATE)),
          _emodb_speakers(files))


def emodb_source(config) -> LogMelSource:
  """EmoDB clips of the emotions shared with RAVDESS, labelled with RAVDESS indices
  (normalised as `config.data.audio_norm` says; `train`: with the RAVDESS fold's
  training statistics)."""
  d = config.data
  train = _training_statistics(config)
  keep, labels = [], []
  for f in _emodb_files(config):
    name = os.path.basename(f)
    if len(name) < 7:
      raise base.DataError(f'{f}: not an EmoDB name (emotion is character 6)')
    if name[5] in EMODB_TO_RAVDESS:
      keep.append(f)
      labels.append(EMODB_TO_RAVDESS[name[5]])
  waves, lengths = _pad(_decoded(keep, d.top_db), int(d.max_seconds * SAMPLE_RATE))
  return LogMelSource(waves, lengths, np.asarray(labels, np.int32), _features(d),
                      stats=_stats(d, waves, lengths, _emodb_speakers(keep), train))


def configure(config, arg: str | None = None, own=()):
  """Sets the RAVDESS speech data fields (only those) of `config`.

  `arg`: comma-separated variants: `fold<k>` (k = 1..6), `smoke` (1 s clips); `own`: the
  config file's variants, accepted here and applied by it.
  """
  with config.unlocked():
    d = config.data
    d.name = 'ravdess'
    d.modalities = ('audio',)
    d.fold = 1
    d.num_valid = 2  # Validation actors, taken from the next fold.
    d.unlabelled = ()  # ('emodb',): unlabelled extra training clips (pretraining only).
    d.max_seconds = 4.0
    d.top_db = 40.0
    d.window_ms = 25.0
    d.hop_ms = 20.0  # 50 frames/s: about 200 frames per trimmed clip.
    d.n_mels = 64
    d.audio_norm = 'clip'  # clip | train | speaker (per-speaker: name it in tables).
    for item in filter(None, (arg or '').split(',')):
      if item.startswith('fold') and item[4:].isdigit():
        d.fold = int(item[4:])
      elif item == 'smoke':
        d.max_seconds, d.hop_ms = 1.0, 20.0
      elif item not in own:
        raise ValueError(f'unknown config variant {item!r} (fold1..fold6, smoke'
                         f'{"".join(", " + o for o in own)})')
  return config
