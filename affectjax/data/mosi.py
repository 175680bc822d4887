"""CMU-MOSI and CMU-MOSEI as TFDS builders (ArrayRecord), read through `tfds.data_source`.

Two sources, both the formats researchers actually have (`config.data.source`):

* `poria`: `mosi/mosi_utterances.npz`, the utterance features of Poria et al. 2017
  (100-d text CNN, 73-d openSMILE audio, 100-d 3D-CNN video) with their split:
  62 training videos / 31 test videos. The feature extractors were trained on those
  62 videos, so this is the only honest split for these features. The validation set
  is `VALID_VIDEOS` training videos drawn with the fixed seed `VALID_SEED`; it never
  touches the test videos.
  Published with https://github.com/SenticNet/contextual-sentiment-analysis.
* `mmsa`: the MMSA toolkit pickles (`aligned_50.pkl`, `unaligned_50.pkl`, ...):
  `{train, valid, test}` dicts holding `text`, `audio`, `vision` arrays (N, T, D),
  `regression_labels` (N,), `id` (N,) and optionally `audio_lengths` /
  `vision_lengths`. Read with a restricted unpickler (NumPy arrays and containers
  only). Published with https://github.com/thuiar/MMSA (dataset links in its README).

`config.data.mode`: `utterance` (independent utterances) or `contextual` (one example
per video: its utterances in order, padded to the longest video, with `label_mask`).
Prepared TFDS data lives in `config.data.tfds_dir` (default ~/.cache/affectjax/tfds);
the raw files are read from the data directory (`config.data.dir` or
$AFFECTJAX_DATA_DIR).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from affectjax import errors
from affectjax.data import base, prepared, safe_pickle

VALID_VIDEOS = 10
VALID_SEED = 0
MODALITIES = ('text', 'audio', 'vision')
# Sentiment is annotated on a 7-point scale from -3 (highly negative) to +3 (highly
# positive) in both CMU-MOSI (Zadeh et al. 2016) and CMU-MOSEI (Zadeh et al. 2018).
LABEL_RANGE = (-3.0, 3.0)
_PORIA_WIDTHS = {'text_feat': 100, 'audio_feat': 73, 'video_feat': 100}
_NPZ_FIELDS = {'id': 1, 'video_id': 1, 'segment': 1, 'sentiment': 1, 'split': 1,
               'text_feat': 2, 'audio_feat': 2, 'video_feat': 2}
_NPZ_WHAT = ('the MOSI utterance features (fields id, video_id, segment, sentiment, split, '
             'text_feat, audio_feat, video_feat); published with '
             'https://github.com/SenticNet/contextual-sentiment-analysis')
_MMSA_WHAT = ('an MMSA feature pickle ({train, valid, test} dicts with text, audio, vision, '
              'regression_labels, id); published with https://github.com/thuiar/MMSA')


# -- reading the raw files --------------------------------------------------------------


def read_poria_npz(path: str) -> dict[str, dict[str, np.ndarray]]:
  """{split: arrays} with the validation videos carved from the training videos."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: not found (expected {_NPZ_WHAT})')
  try:
    with np.load(path, allow_pickle=False) as f:
      raw = {k: f[k] for k in f.files}
  except Exception as e:
    raise ValueError(f'{path}: corrupt or unreadable npz ({type(e).__name__}); '
                     f'expected {_NPZ_WHAT}') from None
  for field, ndim in _NPZ_FIELDS.items():
    if field not in raw:
      raise errors.DataError(f'{path}: field {field!r} is missing (expected {_NPZ_WHAT})')
    if raw[field].ndim != ndim:
      raise errors.DataError(f'{path}: field {field!r} has shape {raw[field].shape}, '
                           f'expected {ndim} dimension(s)')
    if len(raw[field]) != len(raw['id']):
      raise errors.DataError(f'{path}: field {field!r} has {len(raw[field])} rows but \'id\' '
                           f'has {len(raw["id"])}')
  for field, width in _PORIA_WIDTHS.items():
    if raw[field].shape[1] != width:
      raise errors.DataError(f'{path}: field {field!r} has {raw[field].shape[1]} features per '
                           f'utterance, expected {width} (Poria et al. 2017)')
    if not np.issubdtype(raw[field].dtype, np.number):
      raise errors.DataError(f'{path}: field {field!r} has dtype {raw[field].dtype}, '
                           'expected numbers')
    bad = ~np.isfinite(raw[field])
    if bad.any():
      raise errors.DataError(f'{path}: field {field!r} has {int(bad.sum())} NaN/inf values '
                           f'(first in row {int(np.argwhere(bad)[0, 0])})')
  if not np.issubdtype(raw['sentiment'].dtype, np.number):
    raise errors.DataError(f'{path}: field \'sentiment\' has dtype {raw["sentiment"].dtype}, '
                         'expected numbers')
  check_label_range(raw['sentiment'], f'{path}: field \'sentiment\'')
  raw['id'] = _checked_ids(raw['id'], path)
  raw['video_id'] = _checked_ids(raw['video_id'], path, 'video_id', unique=False)
  segment = raw['segment']
  if not np.issubdtype(segment.dtype, np.number) or not np.isfinite(segment).all() or (
      segment != np.round(segment)).any():
    raise errors.DataError(f'{path}: field \'segment\' must hold whole numbers (the '
                         'utterance\'s position in its video)')
  unknown = sorted(set(map(str, raw['split'])) - {'train', 'test'})
  if unknown:
    raise errors.DataError(f'{path}: field \'split\' has {unknown[0]!r} (expected train or '
                         'test)')
  train_videos = sorted(set(raw['video_id'][raw['split'] == 'train']))
  if len(train_videos) <= VALID_VIDEOS:
    raise errors.DataError(f'{path}: field \'split\' has {len(train_videos)} training videos; '
                         f'need more than the {VALID_VIDEOS} that validation takes')
  if not (raw['split'] == 'test').any():
    raise errors.DataError(f'{path}: field \'split\' has no test utterances')
  rng = np.random.default_rng(VALID_SEED)
  valid_videos = set(rng.choice(train_videos, VALID_VIDEOS, replace=False))
  split = raw['split'].astype(object)
  split[np.isin(raw['video_id'], list(valid_videos))] = 'valid'
  out = {}
  for name in base.SPLITS:
    sel = split == name
    out[name] = {
        'id': raw['id'][sel], 'video_id': raw['video_id'][sel],
        'segment': raw['segment'][sel].astype(np.int32),
        'text': raw['text_feat'][sel].astype(np.float32),
        'audio': raw['audio_feat'][sel].astype(np.float32),
        'vision': raw['video_feat'][sel].astype(np.float32),
        'label': raw['sentiment'][sel].astype(np.float32),
    }
  return out


def check_label_range(label: np.ndarray, where: str) -> None:
  """Sentiment labels must lie in LABEL_RANGE (and be finite)."""
  label = np.asarray(label, np.float64)
  low, high = LABEL_RANGE
  bad = ~np.isfinite(label) | (label < low) | (label > high)
  if bad.any():
    first = int(np.argmax(bad))
    raise errors.DataError(f'{where} has {int(bad.sum())} values outside [{low:g}, {high:g}] '
                         f'(first: {label[first]!r} in row {first})')


def _checked_ids(raw, where: str, field: str = 'id', unique: bool = True) -> np.ndarray:
  """Ids as strings: one per row, each a non-empty string or integer; with `unique`, none
  twice (a repeated example id merges two examples in every per-id table and prediction;
  video ids repeat, one per utterance)."""
  ids = np.asarray(raw)
  if ids.ndim != 1:
    raise errors.DataError(f'{where}: field {field!r} has shape {ids.shape}, expected one id '
                         'per example')
  for i, v in enumerate(ids.tolist()):
    if isinstance(v, bytes):
      v = v.decode('utf-8', 'replace')
    if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip():
      raise errors.DataError(f'{where}: field {field!r} row {i}: {v!r} is not a non-empty '
                           'string or integer')
  ids = np.asarray([v.decode('utf-8', 'replace') if isinstance(v, bytes) else str(v)
                    for v in ids.tolist()])
  if unique:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
      raise errors.DataError(f'{where}: field {field!r} has {str(values[counts > 1][0])!r} '
                           f'{counts[counts > 1][0]} times; ids must be unique')
  return ids


def read_mmsa_pickle(path: str) -> dict[str, dict[str, np.ndarray]]:
  """{split: arrays} from an MMSA pickle; ids 'video$_$clip' give video and segment."""
  data = safe_pickle.load(path, _MMSA_WHAT)
  if not isinstance(data, dict):
    raise errors.DataError(f'{path}: top level is {type(data).__name__}, expected a dict '
                         f'with train/valid/test ({_MMSA_WHAT})')
  out = {}
  for name in base.SPLITS:
    if name not in data or not isinstance(data[name], dict):
      raise errors.DataError(f'{path}: split {name!r} is missing (expected {_MMSA_WHAT})')
    d = data[name]
    for field in (*MODALITIES, 'regression_labels', 'id'):
      if field not in d:
        raise errors.DataError(f'{path}: {name}: field {field!r} is missing')
    ids = _checked_ids(d['id'], f'{path}: {name}')
    video, segment = [], []
    for i in ids:
      v, _, clip = i.rpartition('$_$') if '$_$' in i else (i, '', '0')
      video.append(v)
      segment.append(int(clip) if clip.isdigit() else 0)
    try:
      label = np.asarray(d['regression_labels'], np.float32).reshape(-1)
    except (TypeError, ValueError):
      raise errors.DataError(f'{path}: {name}: field \'regression_labels\' is not numeric') \
          from None
    if not len(label):
      raise errors.DataError(f'{path}: split {name!r} is empty')
    check_label_range(label, f'{path}: {name}: field \'regression_labels\'')
    arrays = {'id': ids, 'video_id': np.asarray(video), 'segment': np.asarray(segment, np.int32),
              'label': label}
    for m in MODALITIES:
      try:
        x = np.asarray(d[m], np.float32)
      except (TypeError, ValueError):
        raise errors.DataError(f'{path}: {name}: field {m!r} is not a numeric array') from None
      if len(x) != len(label):
        raise errors.DataError(f'{path}: {name}: field {m!r} has {len(x)} rows but '
                             f'\'regression_labels\' has {len(label)}')
      if x.ndim != 3:
        raise errors.DataError(f'{path}: {name}: field {m!r} has shape {x.shape}, expected '
                             '(N, T, D)')
      arrays[m] = x
      lengths = d.get(f'{m}_lengths')
      if lengths is None:
        lengths = np.full(len(x), x.shape[1], np.int32)
      else:
        field = f'{path}: {name}: field \'{m}_lengths\''
        try:
          raw_lengths = np.asarray(lengths, np.float64).reshape(-1)
        except (TypeError, ValueError):
          raise errors.DataError(f'{field} is not numeric') from None
        if len(raw_lengths) != len(x):
          raise errors.DataError(f'{field} has {len(raw_lengths)} entries for {len(x)} rows')
        if (not np.isfinite(raw_lengths).all() or (raw_lengths != np.round(raw_lengths)).any()
            or raw_lengths.min() < 0 or raw_lengths.max() > x.shape[1]):
          raise errors.DataError(f'{field} must hold whole numbers in [0, {x.shape[1]}] (the '
                               f'sequence length), got {raw_lengths.min():g} .. '
                               f'{raw_lengths.max():g}')
        lengths = raw_lengths.astype(np.int32)
      arrays[f'{m}_lengths'] = lengths
    out[name] = arrays
  for m in MODALITIES:  # One model reads every split: the same steps and features.
    shapes = {name: out[name][m].shape[1:] for name in out}
    if len(set(shapes.values())) > 1:
      raise errors.DataError(f'{path}: field {m!r} has (steps, features) '
                           + ', '.join(f'{k} {v}' for k, v in shapes.items())
                           + '; every split needs the same')
  return out


# -- TFDS builders -------------------------------------------------------------------------


@prepared.builder_cache
def _builders():
  """Defines the builder classes on first use (keeps tfds out of light imports)."""
  tfds = prepared.tfds()

  def text():
    return tfds.features.Text()

  class MosiPoria(tfds.core.GeneratorBasedBuilder):
    """CMU-MOSI utterances with the features and split of Poria et al. (2017)."""
    VERSION = tfds.core.Version('1.1.0')
    RELEASE_NOTES = {'1.1.0': 'One builder config per source file content.'}
    BUILDER_CONFIGS = []
    MANUAL_DOWNLOAD_INSTRUCTIONS = f'Place mosi/mosi_utterances.npz in the manual dir: {_NPZ_WHAT}'

    def _info(self):
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
          'id': text(), 'video_id': text(),
          'segment': tfds.features.Scalar(np.int32),
          'text': tfds.features.Tensor(shape=(100,), dtype=np.float32),
          'audio': tfds.features.Tensor(shape=(73,), dtype=np.float32),
          'vision': tfds.features.Tensor(shape=(100,), dtype=np.float32),
          'label': tfds.features.Scalar(np.float32),
      }))

    def _split_generators(self, dl_manager):
      splits = read_poria_npz(os.path.join(dl_manager.manual_dir, 'mosi', 'mosi_utterances.npz'))
      return {name: self._generate_examples(arrays) for name, arrays in splits.items()}

    def _generate_examples(self, arrays):
      for i, key in enumerate(arrays['id']):
        yield str(key), {k: v[i] for k, v in arrays.items()}

  @dataclasses.dataclass
  class SourceConfig(tfds.core.BuilderConfig):
    file: str = ''

  class MmsaSentiment(tfds.core.GeneratorBasedBuilder):
    """MOSI / MOSEI from an MMSA feature pickle (one builder config per file)."""
    VERSION = tfds.core.Version('1.0.0')
    BUILDER_CONFIGS = []
    MANUAL_DOWNLOAD_INSTRUCTIONS = f'Place the pickle in the manual dir: {_MMSA_WHAT}'

    def _info(self):
      seq = lambda: tfds.features.Tensor(shape=(None, None), dtype=np.float32,  # noqa: E731
                                         encoding=tfds.features.Encoding.BYTES)
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
          'id': text(), 'video_id': text(),
          'segment': tfds.features.Scalar(np.int32),
          **{m: seq() for m in MODALITIES},
          **{f'{m}_lengths': tfds.features.Scalar(np.int32) for m in MODALITIES},
          'label': tfds.features.Scalar(np.float32),
      }))

    def _split_generators(self, dl_manager):
      splits = read_mmsa_pickle(os.path.join(dl_manager.manual_dir, self.builder_config.file))
      return {name: self._generate_examples(arrays) for name, arrays in splits.items()}

    def _generate_examples(self, arrays):
      for i, key in enumerate(arrays['id']):
        yield f'{i}:{key}', {k: v[i] for k, v in arrays.items()}

  return (MosiPoria, MmsaSentiment, SourceConfig)


def prepare(source: str, data_dir: str, tfds_dir: str, file: str = ''):
  """Builds (once) and returns the TFDS builder for `source` over the raw files in `data_dir`."""
  MosiPoria, MmsaSentiment, SourceConfig = _builders()
  if source == 'poria':
    path = os.path.join(data_dir, 'mosi', 'mosi_utterances.npz')
    stem, reader, what = 'poria', read_poria_npz, _NPZ_WHAT
  elif source == 'mmsa':
    if not file:
      raise errors.DataError('config.data.file: name the MMSA pickle (relative to the data dir)')
    stem = ''.join(c if c.isalnum() else '_' for c in file).strip('_').lower()
    path = os.path.join(data_dir, file)
    reader, what = read_mmsa_pickle, _MMSA_WHAT
  else:
    raise errors.DataError(f'config.data.source: unknown {source!r} (poria | mmsa)')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: not found (expected {what})')
  # The config name carries a hash of the file's content: a replaced file is rebuilt.
  name = f'{stem}_{prepared.content_hash([path])}'
  if source == 'poria':
    builder = MosiPoria(data_dir=tfds_dir, file_format='array_record',
                        config=SourceConfig(name=name, file=os.path.relpath(path, data_dir)))
  else:
    builder = MmsaSentiment(data_dir=tfds_dir, file_format='array_record',
                            config=SourceConfig(name=name, file=file))
  return prepared.build_once(builder, data_dir, check=lambda: reader(path))


def read_prepared(builder) -> dict[str, dict[str, np.ndarray]]:
  """All records of every split, read through `tfds.data_source`, in (video, segment) order."""
  out = {}
  for split, source in builder.as_data_source().items():
    records = [source[i] for i in range(len(source))]
    if not records:
      raise errors.DataError(f'{builder.data_dir}: split {split!r} is empty')
    arrays = {k: np.stack([r[k] for r in records]) for k in records[0]}
    for k, v in arrays.items():
      if k in ('id', 'video_id'):
        arrays[k] = np.asarray([x.decode() if isinstance(x, bytes) else x for x in v])
      elif v.dtype == np.float64:  # Scalars come back as Python floats / ints.
        arrays[k] = v.astype(np.float32)
      elif v.dtype == np.int64:
        arrays[k] = v.astype(np.int32)
    order = np.lexsort((arrays['segment'], arrays['video_id']))
    out[split] = {k: v[order] for k, v in arrays.items()}
  return out


def to_contextual(arrays: dict[str, np.ndarray], fields, max_len: int = 0) -> dict[str, np.ndarray]:
  """One example per video: utterances in segment order, padded to `max_len` (0: the
  longest video); `label_mask` marks real ones."""
  videos, starts = np.unique(arrays['video_id'], return_index=True)
  order = np.argsort(starts)
  videos = videos[order]
  groups = [np.flatnonzero(arrays['video_id'] == v) for v in videos]
  groups = [g[np.argsort(arrays['segment'][g], kind='stable')] for g in groups]
  max_len = max(max_len, max(len(g) for g in groups))
  out = {'video_id': videos, 'label_mask': np.zeros((len(groups), max_len), np.float32)}
  for k in fields:
    v = arrays[k]
    padded = np.zeros((len(groups), max_len, *v.shape[1:]), v.dtype)
    for i, g in enumerate(groups):
      padded[i, :len(g)] = v[g]
    out[k] = padded
  for i, g in enumerate(groups):
    out['label_mask'][i, :len(g)] = 1
  return out


def load(config) -> base.Dataset:
  d = config.data
  if d.mode not in ('utterance', 'contextual'):
    raise errors.DataError(f'config.data.mode: unknown {d.mode!r} (utterance | contextual)')
  builder = prepare(d.source, prepared.data_dir(config, 'mosi/ (or the MMSA pickle)'),
                    prepared.tfds_dir(config), d.get('file', ''))
  splits = read_prepared(builder)
  modalities = tuple(d.modalities)
  for m in modalities:
    if m not in MODALITIES:
      raise errors.DataError(f'config.data.modalities: unknown {m!r} (text, audio, vision)')
  extra = tuple(f'{m}_lengths' for m in modalities if f'{m}_lengths' in splits['train'])
  if d.mode == 'contextual':
    fields = (*modalities, *extra, 'label')
    # One padded length for every split, so one compiled step serves them all.
    longest = max(np.unique(v['video_id'], return_counts=True)[1].max()
                  for v in splits.values())
    splits = {k: to_contextual(v, fields, -(-longest // 8) * 8) for k, v in splits.items()}
    extra = (*extra, 'label_mask')
  elif d.mode != 'utterance':
    raise errors.DataError(f'config.data.mode: unknown {d.mode!r} (utterance | contextual)')
  config_name = builder.builder_config.name if builder.builder_config else 'default'
  return base.Dataset.from_arrays(splits, modalities=modalities, num_classes=None,
                                  where=f'{builder.name}/{config_name}', extra=extra)
