"""Berlin EmoDB (Burkhardt et al. 2005): 535 German utterances, 10 speakers, 7 emotions,
speaker-independent folds.

Reads `<data dir>/emodb/wav/*.wav` (any rate, resampled to 16 kHz, silence-trimmed; the
copies in ../shared/data are cut or padded to 2 s and peak-normalised per file). The
emotion is character 6 of the file name (W anger, L boredom, E disgust, A fear, F
happiness, T sadness, N neutral), the speaker characters 1-2.

Folds are leave one speaker out: `config.data.fold` k (1-10) tests the k-th speaker (in
ascending id order), validates on the next one, and trains on the other eight. `audio` is
log-mel frames standardised per clip (`audio_norm='clip'`), or per speaker over all that
speaker's clips (`speaker`: per-speaker normalisation, which tables must name), or, with
`config.data.encoder`, a pretrained speech encoder's frozen features or its input
(`affectjax/data/encoded.py`).
"""

from __future__ import annotations

import glob
import os

import numpy as np

from affectjax import errors
from affectjax.data import audio, base, encoded, prepared

# Class order; the letter is character 6 of the file name.
EMOTIONS = ('neutral', 'happiness', 'sadness', 'anger', 'fear', 'disgust', 'boredom')
LETTERS = {'N': 0, 'F': 1, 'T': 2, 'W': 3, 'A': 4, 'E': 5, 'L': 6}
NORMS = ('clip', 'speaker')


def read_files(config) -> tuple[str, list[str], np.ndarray, np.ndarray]:
  """(root, files, labels, speakers) of every EmoDB clip."""
  root = os.path.join(prepared.data_dir(config, 'emodb/wav/*.wav'), 'emodb', 'wav')
  files = sorted(glob.glob(os.path.join(root, '*.wav')))
  if not files:
    raise errors.DataError(f'{root}: no .wav files')
  labels, speakers = [], []
  for f in files:
    name = os.path.basename(f)
    if len(name) < 7 or name[5] not in LETTERS or not name[:2].isdigit():
      raise errors.DataError(f'{f}: not an EmoDB name (speaker digits 1-2, emotion letter 6 '
                           f'of {"".join(LETTERS)})')
    labels.append(LETTERS[name[5]])
    speakers.append(name[:2])
  return root, files, np.asarray(labels, np.int32), np.asarray(speakers)


def fold_speakers(speakers, fold: int) -> dict[str, list[str]]:
  """Leave one speaker out: test = the fold-th speaker, valid = the next, train = the rest."""
  names = sorted(set(speakers))
  if not isinstance(fold, int) or not 1 <= fold <= len(names):
    raise errors.DataError(f'config.data.fold: {fold!r} is not in 1..{len(names)} (one fold per '
                         'EmoDB speaker)')
  test, valid = names[fold - 1], names[fold % len(names)]
  return {'train': [s for s in names if s not in (test, valid)], 'valid': [valid],
          'test': [test]}


def load(config) -> base.Dataset:
  d = config.data
  root, files, labels, speakers = read_files(config)
  split_speakers = fold_speakers(speakers, d.fold)
  rows = {split: np.flatnonzero(np.isin(speakers, who)) for split, who in
          split_speakers.items()}
  where = f'{root} fold {d.fold} (test speaker {split_speakers["test"][0]})'
  clips = audio.decoded(files, d.top_db)
  if encoded.enabled(d):
    corpus = encoded.Corpus(config, clips, files, speakers, 'EmoDB', train_rows=rows['train'])
    return base.Dataset({s: corpus.source(r, labels[r]) for s, r in rows.items()},
                        ('audio',), len(EMOTIONS), f'{where} through {corpus.spec.name}',
                        EMOTIONS, model_inputs=encoded.model_inputs(d),
                        preprocess=encoded.preprocess(d, corpus.spec),
                        preprocess_arrays=corpus.statistics)
  if d.audio_norm not in NORMS:
    raise errors.DataError(f'config.data.audio_norm: {d.audio_norm!r} ({" | ".join(NORMS)})')
  waves, lengths = audio.pack(clips, int(d.max_seconds * audio.SAMPLE_RATE))
  kwargs = {'window_ms': d.window_ms, 'hop_ms': d.hop_ms, 'n_mels': d.n_mels}
  stats = (audio.band_statistics(waves, lengths, speakers, kwargs)
           if d.audio_norm == 'speaker' else None)
  splits = {s: audio.LogMelSource(waves[r], lengths[r], labels[r], kwargs,
                                  stats=None if stats is None else (stats[0][r], stats[1][r]))
            for s, r in rows.items()}
  return base.Dataset(splits, ('audio',), len(EMOTIONS), where, EMOTIONS)
