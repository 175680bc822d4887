"""Labels and speakers of clips from their file names or a label table.

A scheme per corpus: `ravdess` (the emotion and actor fields of its names), `crema-d`
(`<speaker>_<sentence>_<EMOTION>_...`), `none` (unlabelled; the speaker is the file's
stem), or a CSV of `file,label[,speaker]` rows for any other folder.
"""

from __future__ import annotations

import os

from affectjax import errors
from affectjax.data import base, ravdess

CREMA_EMOTIONS = ('NEU', 'HAP', 'SAD', 'ANG', 'FEA', 'DIS')


class Labels:
  """Label (class index, or -1 when unlabelled) and speaker of each clip."""

  def __init__(self, scheme: str):
    self.scheme = scheme
    self.table: dict[str, tuple[str, str]] = {}
    if scheme == 'ravdess':
      self.names = ravdess.EMOTIONS
    elif scheme == 'crema-d':
      self.names = CREMA_EMOTIONS
    elif scheme == 'none':
      self.names = ()
    elif scheme.lower().endswith('.csv'):
      self.names = self._read_csv(scheme)
    else:
      raise errors.DataError(f'clips: labels {scheme!r} (ravdess | crema-d | none | FILE.csv)')

  def _read_csv(self, path):
    if not os.path.isfile(path):
      raise errors.DataError(f'{path}: label file not found')
    names = []
    rows = base.read_csv(path, 'a label file needs columns file,label[,speaker]',
                         ('file', 'label'))
    for i, row in enumerate(rows, 2):
      if not row['file'] or not row['label']:
        raise errors.DataError(f'{path}:{i}: empty file or label')
      self.table[os.path.basename(row['file'])] = (row['label'], row.get('speaker') or '')
      if row['label'] not in names:
        names.append(row['label'])
    return tuple(names)

  def __call__(self, path: str) -> tuple[int, str]:
    stem = os.path.splitext(os.path.basename(path))[0]
    if self.scheme == 'ravdess':
      emotion, actor = ravdess.parse_ravdess_name(path, media=(1, 2, 3))
      return emotion, f'{actor:02d}'
    if self.scheme == 'crema-d':
      parts = stem.split('_')
      if len(parts) < 3 or parts[2] not in CREMA_EMOTIONS:
        raise errors.DataError(f'{path}: not a CREMA-D name (<speaker>_<sentence>_<EMOTION>_...)')
      return CREMA_EMOTIONS.index(parts[2]), parts[0]
    if self.scheme == 'none':
      return -1, stem
    key = os.path.basename(path)
    if key not in self.table:
      raise errors.DataError(f'{self.scheme}: no row for clip {key}')
    label, speaker = self.table[key]
    return self.names.index(label), speaker or stem
