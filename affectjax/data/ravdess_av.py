"""RAVDESS audio-visual pairs: each clip's face (35 OpenFace action units) with its speech.

The face features are the first 35 values of `<data dir>/ravdess/au_mfcc.npz` (`clip`
ids in the audio-visual naming, `01-...`; `features` (N, 294): 35 action units, then 259
MFCC statistics that are not used: their first values repeat a constant, and the speech
itself is here). The audio is the same clip's speech file,
`ravdess/speech_16k/Actor_XX/03-...` (the ids differ only in the modality digit), turned
into log-mel frames by `affectjax/data/audio.py`'s front end (once, when loaded), standardised
per band with the training actors' statistics (`audio_norm='train'`), per clip, or per
speaker (`audio_norm='speaker'`); or, with `config.data.encoder`, a pretrained speech
encoder's frozen features or input (`affectjax/data/encoded.py`).

Fields: `audio` (T, n_mels) with `frame_mask` (T,), `face` (35,), `label` (8 emotions),
`actor` (1-24; for per-actor analyses, never a model input).
Splits are speaker-independent actor folds (`config.data.fold`, the test actors of
`ravdess/actor_folds.json`); validation is the next fold's first `valid_actors` actors;
the rest train. The action units are standardised with the training actors' mean and
standard deviation, or, with `config.data.speaker_norm` (a speaker-normalisation
technique that tables must name), with each actor's own statistics over all of that
actor's clips (no labels are used).
"""

from __future__ import annotations

import glob
import os

import numpy as np

from affectjax import errors
from affectjax.data import audio, base, encoded, prepared, ravdess

NUM_ACTION_UNITS = 35


def read_action_units(path: str) -> dict[str, np.ndarray]:
  """{speech clip id '03-...': (35,) float32} from au_mfcc.npz, or a DataError."""
  try:
    with np.load(path, allow_pickle=False) as z:
      clips, feats = z['clip'], z['features']
  except FileNotFoundError:
    raise errors.DataError(f'{path}: no such file (RAVDESS face features)') from None
  except (OSError, ValueError, KeyError) as e:
    raise errors.DataError(f'{path}: fields clip/features unreadable ({e})') from None
  if feats.ndim != 2 or feats.shape[1] < NUM_ACTION_UNITS or len(clips) != len(feats):
    raise errors.DataError(f'{path}: field features has shape {feats.shape}, expected '
                         f'({len(clips)}, >= {NUM_ACTION_UNITS})')
  au = np.asarray(feats[:, :NUM_ACTION_UNITS], np.float32)
  bad = ~np.isfinite(au)
  if bad.any():
    first = int(np.argwhere(bad.any(1))[0, 0])
    raise errors.DataError(f'{path}: field features has NaN/inf action units (first in clip '
                         f'{clips[first]})')
  out = {}
  for clip, row in zip(clips, au):
    parts = str(clip).split('-')
    if len(parts) != 7 or not all(p.isdigit() for p in parts):
      raise errors.DataError(f'{path}: field clip has {clip!r}, not a RAVDESS id')
    out['-'.join(['03'] + parts[1:])] = row
  return out


def load(config) -> base.Dataset:
  d = config.data
  modalities = tuple(d.modalities)
  if not modalities or not set(modalities) <= {'audio', 'face'}:
    raise errors.DataError(f'config.data.modalities: {modalities} (audio and/or face)')
  root = os.path.join(prepared.data_dir(config, 'ravdess/au_mfcc.npz and ravdess/speech_16k'),
                      'ravdess')
  faces = read_action_units(os.path.join(root, 'au_mfcc.npz'))
  files = sorted(glob.glob(os.path.join(root, 'speech_16k', 'Actor_*', '*.*')))
  if not files:
    raise errors.DataError(f'{root}/speech_16k: no audio files (expected Actor_XX/*.flac)')
  ids = [os.path.splitext(os.path.basename(f))[0] for f in files]
  missing = [i for i in ids if i not in faces]
  if missing:
    raise errors.DataError(f'{root}/au_mfcc.npz: field clip has no face features for '
                         f'{len(missing)} speech clips (first: {missing[0]})')
  labels, actors = zip(*(ravdess.parse_ravdess_name(f) for f in files))
  labels, actors = np.asarray(labels, np.int32), np.asarray(actors)
  face = np.stack([faces[i] for i in ids])
  split_actors = ravdess.fold_actors(
      ravdess.read_folds(os.path.join(root, 'actor_folds.json')), d.fold, d.valid_actors)
  train = np.isin(actors, split_actors['train'])
  if d.speaker_norm:
    for a in np.unique(actors):
      rows = actors == a
      face[rows] = (face[rows] - face[rows].mean(0)) / (face[rows].std(0) + 1e-6)
  else:
    face = (face - face[train].mean(0)) / (face[train].std(0) + 1e-6)
  if encoded.enabled(d):
    corpus = encoded.Corpus(config, audio.decoded(files, d.top_db), files, actors,
                            'RAVDESS audio-visual', train_rows=np.flatnonzero(train))
    splits = {}
    for split, who in split_actors.items():
      idx = np.flatnonzero(np.isin(actors, who))
      splits[split] = corpus.source(idx, labels[idx], {'face': face[idx].astype(np.float32),
                                                       'actor': actors[idx].astype(np.int32)})
    return base.Dataset(splits, modalities, len(ravdess.EMOTIONS),
                        f'{root} (audio-visual) fold {d.fold} through {corpus.spec.name}',
                        ravdess.EMOTIONS, model_inputs=encoded.model_inputs(d),
                        preprocess=encoded.preprocess(d, corpus.spec),
                        preprocess_arrays=corpus.statistics)
  waves, lengths = audio.pack(audio.decoded(files, d.top_db),
                              int(d.max_seconds * audio.SAMPLE_RATE))
  if d.audio_norm not in ravdess.NORMS:
    raise errors.DataError(f'config.data.audio_norm: {d.audio_norm!r} '
                         f'({" | ".join(ravdess.NORMS)})')
  features = {'window_ms': d.window_ms, 'hop_ms': d.hop_ms, 'n_mels': d.n_mels,
              'normalize': d.audio_norm == 'clip'}
  splits = {}
  for split, who in split_actors.items():
    idx = np.flatnonzero(np.isin(actors, who))
    source = audio.LogMelSource(waves[idx], lengths[idx], labels[idx], features,
                                  extra={'face': face[idx].astype(np.float32),
                                         'actor': actors[idx].astype(np.int32)})
    # Computed once (about 50 kB a clip), not per batch: pretraining takes many epochs.
    splits[split] = base.ArraySource(source.get_batch(np.arange(len(idx))))
  if d.audio_norm == 'train':
    # Per band, over the training actors' real frames: the clip's level and spectral
    # shape (lost by per-clip normalisation) stay in the features.
    train = splits['train'].arrays
    mean, std = _band_statistics(train['audio'], train['frame_mask'])
    for source in splits.values():
      _standardise(source.arrays, slice(None), mean, std)
  elif d.audio_norm == 'speaker':
    # Per band over each actor's own real frames (no labels read): a speaker-independent
    # technique that changes the protocol, so tables name it.
    for source in splits.values():
      a = source.arrays
      for actor in np.unique(a['actor']):
        rows = a['actor'] == actor
        _standardise(a, rows, *_band_statistics(a['audio'][rows], a['frame_mask'][rows]))
  return base.Dataset(splits, modalities, len(ravdess.EMOTIONS),
                      f'{root} (audio-visual) fold {d.fold}', ravdess.EMOTIONS)


def _band_statistics(audio: np.ndarray, frame_mask: np.ndarray):
  """Per-band (mean, std) over the real frames of (N, T, bands) log-mel."""
  frames = audio[frame_mask > 0]
  return frames.mean(0), frames.std(0) + 1e-5


def _standardise(arrays: dict, rows, mean, std) -> None:
  """`arrays['audio'][rows]` standardised per band in place; padded frames stay zero."""
  a, m = arrays['audio'][rows], arrays['frame_mask'][rows][..., None]
  arrays['audio'][rows] = ((a - mean) / std * m).astype(np.float32)
