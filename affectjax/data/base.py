"""Random-access sources and the checks every dataset passes before training."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any, Mapping, Sequence

import numpy as np

from affectjax.errors import DataError

SPLITS = ('train', 'valid', 'test')


class ArraySource:
  """A grain-compatible random-access source over a dict of equal-length arrays.

  `source[i]` gives one example; `source.get_batch(idx)` gathers many at once
  (the pipeline batches indices, then gathers, so there is no per-example Python).
  """

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self.arrays = dict(arrays)
    self._len = len(next(iter(self.arrays.values())))

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i):
    return {k: v[i] for k, v in self.arrays.items()}

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[indices] for k, v in self.arrays.items()}

  def element_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-example shape and dtype of every field `get_batch` returns."""
    return {k: (v.shape[1:], v.dtype) for k, v in self.arrays.items()}


class ComputedSource:
  """A source whose examples are computed batch by batch in the input pipeline (log-mel
  from waveforms, encoder features, decoded clips): subclasses define `__len__` and
  `get_batch(indices)`; one example and the element spec come from a batch of one."""

  def __len__(self) -> int:
    raise NotImplementedError

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def __getitem__(self, i):
    return {k: v[0] for k, v in self.get_batch(np.array([i])).items()}

  def element_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-example shape and dtype of every field `get_batch` returns."""
    return {k: (v.shape[1:], v.dtype) for k, v in self.get_batch(np.array([0])).items()}


@dataclasses.dataclass
class Dataset:
  """Splits of one dataset plus what the model and task need to know about it."""
  splits: dict[str, ArraySource]
  modalities: tuple[str, ...]
  num_classes: int | None  # None for regression.
  where: str  # File or generator name, used in error messages.
  class_names: tuple[str, ...] | None = None  # For per-class tables and figures.
  # Model fields the data decides (e.g. ERC's `num_speakers`, the text `encoder` folder
  # whose tokenizer made the ids); `models.get_model` sets them, configs never do.
  model_inputs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # How raw inputs become model inputs, for `affectjax predict` on new files: a JSON-able
  # description (`kind` names the pipeline, e.g. 'speech') and the arrays it needs (the
  # training statistics), saved with the run. Empty: feature files only.
  preprocess: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  preprocess_arrays: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_arrays(cls, splits: Mapping[str, Mapping[str, np.ndarray]], *, modalities,
                  num_classes, where, extra=(), class_names=None,
                  model_inputs=None, preprocess=None) -> 'Dataset':
    """Validates and wraps arrays; `extra` names further fields the model or task
    reads (sequence lengths, `label_mask` for padded utterance sequences)."""
    sources = {}
    for split, arrays in splits.items():
      validate(arrays, (*modalities, *extra), num_classes, f'{where}:{split}')
      sources[split] = ArraySource({k: arrays[k] for k in (*modalities, *extra, 'label')})
    return cls(sources, tuple(modalities), num_classes, where,
               tuple(class_names) if class_names else None, dict(model_inputs or {}),
               dict(preprocess or {}))

  def element_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-example shape and dtype of every field (without the batch axis)."""
    return self.splits['train'].element_spec()


def validate(arrays: Mapping[str, np.ndarray], modalities, num_classes, where: str) -> None:
  """Raises DataError naming `where` and the field for any of the usual faults."""
  for m in modalities:
    if m not in arrays:
      raise DataError(f'{where}: field {m!r} is missing (have {sorted(arrays)})')
  if 'label' not in arrays:
    raise DataError(f'{where}: field \'label\' is missing')
  n = len(arrays['label'])
  for k in (*modalities, 'label'):
    v = np.asarray(arrays[k])
    if len(v) != n:
      raise DataError(f'{where}: field {k!r} has {len(v)} examples but \'label\' has {n}')
    if np.issubdtype(v.dtype, np.floating):
      bad = ~np.isfinite(v)
      if bad.any():
        first = int(np.argwhere(bad.reshape(n, -1).any(axis=1))[0, 0])
        raise DataError(f'{where}: field {k!r} has {int(bad.sum())} NaN/inf values '
                        f'(first in example {first})')
  label = np.asarray(arrays['label'])
  if 'label_mask' in arrays:  # Padded utterance slots hold no label.
    label = label[np.asarray(arrays['label_mask']) > 0]
  if num_classes is not None:
    if not np.issubdtype(label.dtype, np.integer):
      raise DataError(f'{where}: field \'label\' must be integer classes, got {label.dtype}')
    out = (label < 0) | (label >= num_classes)
    if out.any():
      first = int(np.argmax(out))
      raise DataError(f'{where}: field \'label\' has {int(out.sum())} values outside '
                      f'[0, {num_classes}) (first: {int(label[first])} in example {first})')


def read_csv(path: str, what: str, columns: Sequence[str]) -> list[dict]:
  """The rows of a CSV with (at least) `columns`, or a one-line error naming the file
  and the line: binary or UTF-16 content, a malformed or over-long field, a row with more
  (an unquoted comma) or fewer fields than the header, no rows. A UTF-8 byte-order mark
  (Excel's "CSV UTF-8") is not part of the first column's name."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: not found (expected {what})')
  with open(path, 'rb') as f:
    raw = f.read()
  if b'\0' in raw:
    raise DataError(f'{path}: holds NUL bytes: a binary or UTF-16 file, not the UTF-8 '
                         f'(or cp1252) CSV expected ({what})')
  try:
    text = raw.decode('utf-8-sig')
  except UnicodeDecodeError:
    text = raw.decode('cp1252', errors='replace')  # Older releases: curly quotes as cp1252.
  reader = csv.DictReader(io.StringIO(text))
  try:
    rows = list(reader)
  except csv.Error as e:
    raise DataError(f'{path}: line {reader.line_num}: malformed CSV ({e})') from None
  header = reader.fieldnames or []
  for column in columns:
    if column not in header:
      raise DataError(f'{path}: column {column!r} is missing ({what})')
  if not rows:
    raise DataError(f'{path}: has a header but no rows ({what})')
  for i, r in enumerate(rows):
    extra, short = r.get(None) or [], sum(v is None for k, v in r.items() if k is not None)
    if extra or short:
      raise DataError(f'{path}: row {i + 1}: has {len(header) + len(extra) - short} fields, '
                      f'the header {len(header)}' + (' (an unquoted comma in a field?)'
                                                     if extra else ''))
  return rows
