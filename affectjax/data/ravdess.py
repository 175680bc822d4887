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
With `config.data.encoder` set, `audio` is a pretrained speech encoder's frozen features or
its own input instead (`affectjax/data/encoded.py`).

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
import json
import os

import numpy as np

from affectjax import errors
from affectjax.data import audio, base, encoded, prepared

EMOTIONS = ('neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised')
# EmoDB emotion letter (character 6 of the file name) -> RAVDESS class index.
EMODB_TO_RAVDESS = {'N': 0, 'F': 2, 'T': 3, 'W': 4, 'A': 5, 'E': 6}
SHARED_CLASSES = tuple(sorted(EMODB_TO_RAVDESS.values()))
SAMPLE_RATE = audio.SAMPLE_RATE


def parse_ravdess_name(path: str, media: tuple[int, ...] = (3,)) -> tuple[int, int]:
  """(emotion class 0-7, actor 1-24) from a RAVDESS file name whose modality field is
  in `media` (01 audio-visual, 02 video only, 03 audio only)."""
  parts = os.path.splitext(os.path.basename(path))[0].split('-')
  try:
    if len(parts) != 7:
      raise ValueError
    modality, emotion, actor = int(parts[0]), int(parts[2]), int(parts[6])
  except ValueError:
    raise errors.DataError(f'{path}: not a RAVDESS name (modality-channel-emotion-intensity-'
                         'statement-repetition-actor)') from None
  if modality not in media or not 1 <= emotion <= 8 or not 1 <= actor <= 24:
    raise errors.DataError(f'{path}: field emotion/actor/modality out of range '
                         f'(modality {modality}, emotion {emotion}, actor {actor})')
  return emotion - 1, actor


NORMS = ('clip', 'train', 'speaker')


def _norm(d) -> str:
  norm = d.get('audio_norm', 'clip')  # Runs saved before the option read per clip.
  if norm not in NORMS:
    raise errors.DataError(f'config.data.audio_norm: {norm!r} ({" | ".join(NORMS)})')
  return norm


def _stats(d, waves, lengths, speakers, train=None):
  """Per-clip (mean, std) for `config.data.audio_norm`, or None for per-clip statistics.
  `train`: the training split's (mean, std) per band (for `train`)."""
  norm = _norm(d)
  if norm == 'clip':
    return None
  if norm == 'train':
    return tuple(np.broadcast_to(x, (len(waves), len(x))).copy() for x in train)
  return audio.band_statistics(waves, lengths, speakers, _features(d))


def _train_statistics(d, waves, lengths):
  """Per-band (mean, std) over the real frames of the training clips given."""
  mean, std = audio.band_statistics(waves, lengths, np.zeros(len(waves), np.int32),
                                 _features(d))
  return mean[0], std[0]


def fold_files(config):
  """(root, files, labels, actors, {split: actors}) of the fold."""
  d = config.data
  root = os.path.join(prepared.data_dir(config, 'ravdess/speech_16k/Actor_XX/*.flac'),
                      'ravdess')
  files = sorted(glob.glob(os.path.join(root, 'speech_16k', 'Actor_*', '*.*')))
  if not files:
    raise errors.DataError(f'{root}/speech_16k: no audio files (expected Actor_XX/*.flac)')
  labels, actors = zip(*(parse_ravdess_name(f) for f in files))
  labels, actors = np.asarray(labels, np.int32), np.asarray(actors)
  split_actors = fold_actors(read_folds(os.path.join(root, 'actor_folds.json')), d.fold,
                             d.num_valid)
  return root, files, labels, actors, split_actors


def _ravdess(config):
  """(root, waveforms, lengths, labels, actors, {split: actors}) of the fold."""
  d = config.data
  root, files, labels, actors, split_actors = fold_files(config)
  waves, lengths = audio.pack(audio.decoded(files, d.top_db), int(d.max_seconds * SAMPLE_RATE))
  return root, waves, lengths, labels, actors, split_actors


def _training_statistics(config):
  """The fold's training-actor statistics when `audio_norm='train'`, else None."""
  if _norm(config.data) != 'train':
    return None
  _, waves, lengths, _, actors, split_actors = _ravdess(config)
  train = np.isin(actors, split_actors['train'])
  return _train_statistics(config.data, waves[train], lengths[train])


def read_folds(path: str) -> dict[int, list[int]]:
  """Test actors per fold (1-6) from actor_folds.json."""
  try:
    with open(path) as f:
      raw = json.load(f)['test_actors_per_fold']
    folds = {int(k.replace('split', '')): [int(a) for a in v] for k, v in raw.items()}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise errors.DataError(f'{path}: field test_actors_per_fold unreadable ({e})') from None
  return dict(sorted(folds.items()))


def fold_actors(folds: dict[int, list[int]], fold: int,
                num_valid: int = 2) -> dict[str, list[int]]:
  """Train / valid / test actors: test = the fold's actors, valid = the first `num_valid`
  actors of the next fold (so validation speakers are never tested on), train = the rest."""
  if fold not in folds:
    raise errors.DataError(f'config.data.fold: {fold} is not one of {sorted(folds)}')
  keys = sorted(folds)
  test = folds[fold]
  valid = folds[keys[(keys.index(fold) + 1) % len(keys)]][:num_valid]
  train = [a for a in range(1, 25) if a not in test and a not in valid]
  return {'train': train, 'valid': valid, 'test': test}


def _features(d) -> dict:
  return {'window_ms': d.window_ms, 'hop_ms': d.hop_ms, 'n_mels': d.n_mels}


def load(config) -> base.Dataset:
  d = config.data
  if encoded.enabled(d):
    return _load_encoded(config)
  root, waves, lengths, labels, actors, split_actors = _ravdess(config)
  train = None
  if _norm(d) == 'train':
    rows = np.isin(actors, split_actors['train'])
    train = _train_statistics(d, waves[rows], lengths[rows])
  stats = _stats(d, waves, lengths, actors, train)
  splits = {}
  for split, who in split_actors.items():
    idx = np.flatnonzero(np.isin(actors, who))
    splits[split] = audio.LogMelSource(waves[idx], lengths[idx], labels[idx], _features(d),
                                 stats=None if stats is None else (stats[0][idx],
                                                                   stats[1][idx]))
  extra = [_unlabelled_emodb(config)] if 'emodb' in d.unlabelled else []
  if extra:
    first = splits['train'].arrays
    parts = [(first['wave'], first['length'], first['label'],
              None if stats is None else (first['norm_mean'], first['norm_std']))]
    for w, n, speakers in extra:
      parts.append((w, n, np.full(len(n), -1, np.int32), _stats(d, w, n, speakers, train)))
    splits['train'] = audio.LogMelSource(
        *(np.concatenate([p[i] for p in parts]) for i in range(3)), _features(d),
        stats=None if stats is None else tuple(np.concatenate([p[3][i] for p in parts])
                                              for i in range(2)))
  return base.Dataset(splits, ('audio',), len(EMOTIONS), f'{root}/speech_16k fold {d.fold}',
                      EMOTIONS, preprocess=speech_preprocess(d),
                      preprocess_arrays={} if train is None else {'mean': train[0],
                                                                  'std': train[1]})


def _load_encoded(config) -> base.Dataset:
  """The fold through `config.data.encoder` (frozen features or encoder inputs)."""
  d = config.data
  if d.unlabelled:
    raise errors.DataError('config.data.unlabelled: unlabelled clips are for the log-mel '
                         'pretraining configs, not with config.data.encoder')
  root, corpus, labels, rows = _encoded_corpus(config)
  splits = {split: corpus.source(idx, labels[idx]) for split, idx in rows.items()}
  return base.Dataset(splits, ('audio',), len(EMOTIONS),
                      f'{root}/speech_16k fold {d.fold} through {corpus.spec.name}', EMOTIONS,
                      model_inputs=encoded.model_inputs(d),
                      preprocess=encoded.preprocess(d, corpus.spec),
                      preprocess_arrays=corpus.statistics)


def _encoded_corpus(config):
  """(root, the fold's `encoded.Corpus`, labels, {split: rows})."""
  d = config.data
  root, files, labels, actors, split_actors = fold_files(config)
  rows = {split: np.flatnonzero(np.isin(actors, who)) for split, who in split_actors.items()}
  corpus = encoded.Corpus(config, audio.decoded(files, d.top_db), files, actors,
                          'RAVDESS speech', train_rows=rows['train'])
  return root, corpus, labels, rows


def speech_preprocess(d) -> dict:
  """What `inputs_from_files` needs to repeat this pipeline on new audio files."""
  return {'kind': 'ravdess', 'sample_rate': SAMPLE_RATE, 'top_db': float(d.top_db),
          'max_seconds': float(d.max_seconds), 'audio_norm': _norm(d), **{
              k: float(v) if k != 'n_mels' else int(v) for k, v in _features(d).items()}}


INPUTS = 'audio files'  # What a run of this module's pipeline predicts from.


def inputs_from_files(files: list[str], preprocess: dict, arrays: dict) -> dict:
  """{'audio', 'frame_mask'} of audio files through the pipeline a run was trained with
  (`speech_preprocess`): decoded and resampled to 16 kHz, silence trimmed, cut to
  `max_seconds`, log-mel, normalised as the run was (`train`: its saved training
  statistics; `speaker`: the files given together are taken as one speaker)."""
  return inputs_from_waves([audio.read_audio(f) for f in files], files, preprocess, arrays)


def inputs_from_waves(waves: list[np.ndarray], names: list[str], preprocess: dict,
                      arrays: dict) -> dict:
  """`inputs_from_files` of decoded 16 kHz waveforms (`names` for errors): a silent clip,
  or one shorter than a log-mel window after trimming, is a one-line error."""
  window = int(SAMPLE_RATE * preprocess['window_ms'] / 1000)
  clips = [audio.prepare_clip(x, name, preprocess['top_db'], window)
           for x, name in zip(waves, names)]
  files = names
  waves, lengths = audio.pack(clips, int(preprocess['max_seconds'] * preprocess['sample_rate']))
  kwargs = {k: preprocess[k] for k in ('window_ms', 'hop_ms', 'n_mels')}
  if preprocess['audio_norm'] == 'clip':
    stats = None
  elif preprocess['audio_norm'] == 'train':
    stats = tuple(np.broadcast_to(arrays[k], (len(files), len(arrays[k]))) for k in
                  ('mean', 'std'))
  else:
    stats = audio.band_statistics(waves, lengths, np.zeros(len(files), np.int32), kwargs)
  source = audio.LogMelSource(waves, lengths, np.zeros(len(files), np.int32), kwargs, stats=stats)
  batch = source.get_batch(np.arange(len(files)))
  return {'audio': batch['audio'], 'frame_mask': batch['frame_mask']}


def _emodb_files(config) -> list[str]:
  root = os.path.join(prepared.data_dir(config, 'emodb/wav/*.wav'), 'emodb', 'wav')
  files = sorted(glob.glob(os.path.join(root, '*.wav')))
  if not files:
    raise errors.DataError(f'{root}: no .wav files')
  return files


def _emodb_speakers(files: list[str]) -> np.ndarray:
  """EmoDB's speaker: the first two characters of the file name (03a01Fa.wav: 03)."""
  return np.asarray([os.path.basename(f)[:2] for f in files])


def _unlabelled_emodb(config):
  """Every EmoDB clip (all seven emotions, boredom included): waveforms, lengths and
  speakers."""
  d = config.data
  files = _emodb_files(config)
  return (*audio.pack(audio.decoded(files, d.top_db), int(d.max_seconds * SAMPLE_RATE)),
          _emodb_speakers(files))


def emodb_source(config):
  """EmoDB clips of the emotions shared with RAVDESS, labelled with RAVDESS indices
  (normalised as `config.data.audio_norm` says; `train`: with the RAVDESS fold's
  training statistics; or through `config.data.encoder`)."""
  d = config.data
  keep, labels = [], []
  for f in _emodb_files(config):
    name = os.path.basename(f)
    if len(name) < 7:
      raise errors.DataError(f'{f}: not an EmoDB name (emotion is character 6)')
    if name[5] in EMODB_TO_RAVDESS:
      keep.append(f)
      labels.append(EMODB_TO_RAVDESS[name[5]])
  if encoded.enabled(d):
    train = _encoded_corpus(config)[1].statistics if d.encoder_norm == 'train' else None
    corpus = encoded.Corpus(config, audio.decoded(keep, d.top_db), keep, _emodb_speakers(keep),
                            'EmoDB', statistics_from=train)
    return corpus.source(np.arange(len(keep)), np.asarray(labels, np.int32))
  train = _training_statistics(config)
  waves, lengths = audio.pack(audio.decoded(keep, d.top_db), int(d.max_seconds * SAMPLE_RATE))
  return audio.LogMelSource(waves, lengths, np.asarray(labels, np.int32), _features(d),
                      stats=_stats(d, waves, lengths, _emodb_speakers(keep), train))
