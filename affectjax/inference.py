"""A trained run applied to new inputs, from its workdir alone.

  run = affectjax.load_run('/tmp/affectjax/ravdess_ssm')
  rows = run.predict(['clip.wav'])            # or a folder, an .npz or a .csv of features
  rows[0]['label'], rows[0]['probabilities']  # classification; 'score' for regression

Training writes, beside config.json, `run.json` (the run card: the model's input fields
with their per-example shapes and dtypes, modalities, classes and label names, the fields
the data gave the model, and how raw inputs become model inputs) and `preprocess.npz`
(the training statistics that pipeline needs). `load_run` reads those and the best
checkpoint; it never reads the training data. `Run.evaluate` re-scores a split, and so
does need the data.

Inputs:
- `.npz`: one array per input field, examples on the first axis, each example of the
  run's shape (`Run.fields`);
- `.csv`: a header and one row per example; a vector field `f` of size d is the columns
  `f_0 .. f_<d-1>`, a scalar field is the column `f`; an `id` column is kept if present;
- audio files (`.wav`, `.flac`, `.ogg`; `.mp3`, `.m4a` and other FFmpeg formats through
  PyAV) or folders of them, for runs whose data pipeline starts from audio (RAVDESS
  speech): decoded, resampled, trimmed, log-mel and normalised exactly as in training
  (`data/ravdess.py:inputs_from_files`), or through the run's speech encoder
  (`data/encoded.py:inputs_from_waves`: frozen features from the same weights, or the
  encoder's input for a fine-tuned one);
- waveforms already in memory: `run.predict(x, sample_rate=sr)` with `x` one 1-D array or a
  list of them, for the same runs;
- video files (`.mp4`, `.avi`, `.mov`, `.mkv`, `.webm`), for runs on built clips
  (`configs/clips_*`): the build's frame sampling, face crop, size and log-mel
  (`data/clips.py:inputs_from_files`);
- conversations (`.jsonl` lines {"speaker", "utterance"[, "dialogue"]}, or a `.csv` with
  those columns) for text ERC runs: the run's own text encoder (frozen features, or the
  token ids of a fine-tuned one), speakers and padding as in training
  (`data/erc.py:inputs_from_conversations`); one row per utterance, with its speaker and
  text.

Which of these a run reads is its data module's answer: the run card's `preprocess.kind`
names the module (`affectjax.data.input_reader`), and the module's `inputs_from_*`
functions repeat its pipeline; a run on stored features reads .npz and .csv.
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

from affectjax import errors, preemption
from affectjax.data import audio, base, video
from affectjax.runcard import ARRAYS, CARD, read_card, read_config

AUDIO = audio.AUDIO_EXTENSIONS
VIDEO = video.VIDEO_EXTENSIONS


def _files_under(folder: str) -> list[str]:
  """Every file under `folder`, sorted, following symbolic links but entering each real
  directory once and listing each real file once (a link loop is not read again and
  again; a file linked twice is one input)."""
  seen_dirs, seen_files, out = set(), set(), []
  for root, dirs, files in os.walk(folder, followlinks=True):
    real = os.path.realpath(root)
    if real in seen_dirs:
      dirs[:] = []
      continue
    seen_dirs.add(real)
    dirs.sort()
    for name in files:
      path = os.path.join(root, name)
      if os.path.isfile(path) and os.path.realpath(path) not in seen_files:
        seen_files.add(os.path.realpath(path))
        out.append(path)
  return sorted(out)


class Run:
  """A finished run: its config, card and best parameters. A run stopped before its end
  is refused, as `eval` refuses it: its best checkpoint so far is not the run's answer
  (`unfinished=True` takes it knowingly)."""

  def __init__(self, workdir: str, unfinished: bool = False):
    import jax
    from affectjax import checkpoint as checkpoint_lib
    from affectjax import sharding
    from affectjax import experiment
    self.workdir = workdir
    self.config = read_config(workdir)
    results = os.path.join(workdir, 'results.json')
    if not unfinished and not os.path.exists(results):
      raise errors.WorkdirError(
          f'{results}: not found; the run has not finished, so its best checkpoint so far is '
          'not its answer: resume it (affectjax train with the same config and workdir), or '
          'load_run(workdir, unfinished=True) to use it anyway')
    path = os.path.join(workdir, CARD)
    self.card = read_card(workdir)
    arrays_path = os.path.join(workdir, ARRAYS)
    try:
      with np.load(arrays_path, allow_pickle=False) as z:
        self.preprocess_arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
      raise errors.WorkdirError(f'{arrays_path}: not found; the run card needs it (train '
                                'the run again)') from None
    except Exception as e:  # A damaged npz surfaces as zipfile, OSError, ValueError ...
      raise errors.WorkdirError(f'{arrays_path}: unreadable ({type(e).__name__}: '
                                f'{errors.one_line(e)})') from None
    try:
      self.spec = {k: (tuple(int(n) for n in shape), np.dtype(dtype))
                   for k, (shape, dtype) in self.card['element_spec'].items()}
    except (TypeError, ValueError) as e:
      raise errors.WorkdirError(f'{path}: field element_spec is not {{field: [shape, dtype]}} '
                                f'({errors.one_line(e)})') from None
    self.class_names = self.card['class_names']
    with self.config.unlocked():
      self.config.mesh.data, self.config.mesh.model = 1, 1
    self.exp = experiment.Experiment(self.config, sharding.make_mesh(self.config.mesh,
                                                                jax.devices()[:1]),
                                     self.spec, tuple(self.card['modalities']),
                                     self.card['num_classes'], self.class_names,
                                     self.card['model_inputs'])
    ckpt = checkpoint_lib.Checkpoints(workdir)
    try:
      self.params = ckpt.restore_best(self.exp.abstract_state.params)
    finally:
      ckpt.close()
    self.batch_size = 64
    self._step = None

  def __repr__(self) -> str:
    """What the run is: config, model, task, classes, inputs, best step and scores."""
    lines = [f'affectjax run {self.workdir}',
             f'  config {self.config.get("name", "")}: {self.config.model.name}, task '
             f'{self.card["task"]}' + (
                 f', {self.card["num_classes"]} classes' + (
                     f' ({", ".join(map(str, self.class_names))})' if self.class_names
                     else '') if self.card.get('num_classes') else ''),
             '  inputs ' + ', '.join(f'{k} {tuple(v)}' for k, v in self.fields.items())]
    try:
      with open(os.path.join(self.workdir, 'results.json')) as f:
        results = json.load(f)
    except (OSError, ValueError):
      lines.append('  unfinished: no results.json')
    else:
      lines.append(f'  best step {results.get("best_step")} by valid '
                   f'{results.get("select_metric")}')
      for split in ('valid', 'test'):
        if isinstance(results.get(split), dict):
          lines.append(f'  {split} ' + ', '.join(f'{k} {v:.4f}' for k, v in
                                                 results[split].items()
                                                 if isinstance(v, (int, float))))
    return '\n'.join(lines)

  @property
  def fields(self) -> dict:
    """Input field -> per-example shape: what a feature file must hold."""
    return {k: shape for k, (shape, _) in self.spec.items() if k != 'label'}

  def evaluate(self, split: str = 'test') -> dict:
    """Metrics of the best checkpoint on one split (rebuilds the run's dataset)."""
    return evaluate(self.workdir, split)

  def predict_arrays(self, arrays: dict) -> np.ndarray:
    """The task's predictions (logits, or scores) for a dict of input arrays."""
    from affectjax import experiment
    if self.card['task'] not in ('classification', 'regression'):
      raise errors.ConfigError(f'{self.workdir}: a {self.card["task"]} run makes no '
                               'predictions; fine-tune a classifier from it')
    n = len(next(iter(arrays.values())))
    label_shape, label_dtype = self.spec.get('label', ((), np.int32))
    source = base.ArraySource({**{k: arrays[k] for k in self.fields},
                               'label': np.zeros((n, *label_shape), label_dtype)})
    if self._step is None:
      self._step = preemption.compile(self.exp.lower_eval_step(self.batch_size))
    return experiment.eval_outputs(self.exp, self._step, self.params, source,
                                   self.batch_size)['prediction']

  def predict(self, inputs, sample_rate: int | None = None) -> list[dict]:
    """One dict per example of `inputs` (paths: files or folders; or, with `sample_rate`,
    a waveform array or a list of them; or a dict of feature arrays, field -> (examples,
    ...)): its id, and the class probabilities and most likely label, or the score."""
    extra = {}
    if sample_rate is not None:
      ids, arrays = self.read_waveforms(inputs, sample_rate)
    elif isinstance(inputs, dict):  # Feature arrays in memory, as a .npz would hold them.
      arrays = self._check('the arrays given', {k: np.asarray(v) for k, v in inputs.items()})
      ids = [f'#{i}' for i in range(len(next(iter(arrays.values()))))]
    else:
      ids, arrays, extra = self.read_with_columns(inputs)
    out = np.asarray(self.predict_arrays(arrays), np.float64)
    if len(out) != len(ids):
      raise RuntimeError(f'predict: {len(out)} predictions for {len(ids)} inputs')
    rows = []
    if self.card['task'] == 'classification':
      z = np.exp(out - out.max(axis=1, keepdims=True))
      probs = z / z.sum(axis=1, keepdims=True)
      names = self.class_names or [str(i) for i in range(probs.shape[1])]
      for i, p in zip(ids, probs):
        rows.append({'id': i, 'label': names[int(p.argmax())],
                     'probabilities': {n: round(float(v), 6) for n, v in zip(names, p)},
                     **extra.get(i, {})})
    else:
      rows = [{'id': i, 'score': round(float(v), 6)} for i, v in zip(ids, out)]
    return rows

  # -- inputs ------------------------------------------------------------------------------

  def read(self, inputs) -> tuple[list[str], dict]:
    """(example ids, input arrays) of files and folders, checked against the run."""
    return self.read_with_columns(inputs)[:2]

  @property
  def reader(self):
    """The data module that reads this run's raw inputs, or None (features only)."""
    from affectjax import data as data_lib
    return data_lib.input_reader(self.card['preprocess'].get('kind', ''))

  def read_with_columns(self, inputs) -> tuple[list[str], dict, dict]:
    """`read`, and {id: extra output columns} (a conversation's speaker and text)."""
    if isinstance(inputs, (str, os.PathLike)):
      inputs = [inputs]
    files = []
    for path in map(str, inputs):
      if os.path.isdir(path):
        reads = (*AUDIO, *VIDEO, '.npz', '.csv') + (
            ('.jsonl',) if hasattr(self.reader, 'inputs_from_conversations') else ())
        found = [f for f in _files_under(path) if f.lower().endswith(reads)]
        if not found:
          raise errors.DataError(f'{path}: no audio, video, .npz or .csv files')
        files += found
      elif os.path.exists(path):
        files.append(path)
      else:
        raise errors.DataError(f'{path}: no such file or folder')
    media = [f for f in files if f.lower().endswith((*AUDIO, *VIDEO))]
    parts, extra = [], {}
    if media:
      parts.append(self._media(media))
    conversation = hasattr(self.reader, 'inputs_from_conversations')
    for f in files:
      if conversation and f.lower().endswith(('.jsonl', '.csv')):
        ids, arrays, columns = self.reader.inputs_from_conversations(f, self.card['preprocess'])
        parts.append((ids, self._check(f, arrays)))
        extra.update(columns)
      elif f.lower().endswith('.npz'):
        parts.append(self._npz(f))
      elif f.lower().endswith('.csv'):
        parts.append(self._csv(f))
      elif not f.lower().endswith((*AUDIO, *VIDEO)):
        raise errors.DataError(f'{f}: unknown input type (.wav .flac .ogg .mp3 .m4a .mp4 .npz .csv'
                             f'{" .jsonl" if conversation else ""})')
    ids = [i for p in parts for i in p[0]]
    arrays = {k: np.concatenate([p[1][k] for p in parts]) for k in self.fields}
    return ids, arrays, extra

  def read_waveforms(self, waves, sample_rate: int) -> tuple[list[str], dict]:
    """(ids 'waveform#i', input arrays) of waveforms in memory (1-D float arrays at
    `sample_rate` Hz), through the run's audio pipeline."""
    if isinstance(waves, np.ndarray) and waves.ndim == 1:
      waves = [waves]
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or \
        sample_rate <= 0:
      raise errors.DataError(f'predict: sample_rate must be a positive integer, got '
                           f'{sample_rate!r}')
    clips, names = [], []
    for i, x in enumerate(waves):
      x = np.asarray(x)
      name = f'waveform#{i}'
      if x.ndim != 1 or x.dtype.kind not in 'fiu' or not len(x):
        raise errors.DataError(f'{name}: field audio must be a non-empty 1-D array of samples, '
                             f'got shape {x.shape} of {x.dtype}')
      if x.dtype.kind in 'iu':  # PCM integers -> [-1, 1).
        x = x / float(np.iinfo(x.dtype).max + 1)
      if not np.isfinite(x).all():
        raise errors.DataError(f'{name}: field audio has NaN/inf samples')
      clips.append(audio.resample(x.astype(np.float32), int(sample_rate)))
      names.append(name)
    return names, self._check(names[0], self._audio_arrays(clips, names))

  def _audio_arrays(self, clips, names) -> dict:
    if not hasattr(self.reader, 'inputs_from_waves'):
      raise errors.DataError(f'{names[0]}: this run ({self.card["config"]}) does not read '
                             'audio; give an .npz or .csv of its fields')
    return self.reader.inputs_from_waves(clips, names, self.card['preprocess'],
                                         self.preprocess_arrays)

  def _check(self, where: str, arrays: dict) -> dict:
    out, n = {}, None
    for k, shape in self.fields.items():
      if k not in arrays:
        raise errors.DataError(f'{where}: field {k!r} is missing (this run reads '
                             f'{", ".join(f"{f} {s}" for f, s in self.fields.items())})')
      v = np.asarray(arrays[k])
      if v.shape[1:] != shape:
        raise errors.DataError(f'{where}: field {k!r} has examples of shape {v.shape[1:]}; '
                             f'this run reads {shape}')
      if v.dtype.kind not in 'biuf':
        raise errors.DataError(f'{where}: field {k!r} is not numeric ({v.dtype})')
      v = v.astype(self.spec[k][1])
      if v.dtype.kind == 'f' and not np.isfinite(v).all():
        raise errors.DataError(f'{where}: field {k!r} has NaN/inf values')
      if n is not None and len(v) != n:
        raise errors.DataError(f'{where}: field {k!r} has {len(v)} examples, others {n}')
      n = len(v)
      out[k] = v
    if not n:
      raise errors.DataError(f'{where}: no examples (field {next(iter(out))!r} has 0 rows)')
    return out

  def _npz(self, path: str):
    arrays, key = {}, None
    try:
      with np.load(path, allow_pickle=False) as z:
        for key in z.files:
          arrays[key] = z[key]
    except Exception as e:  # A damaged npz surfaces as zipfile, OSError, ValueError ...
      if key is not None and 'allow_pickle' in str(e):
        raise errors.DataError(f'{path}: field {key!r} holds Python objects (a pickled object '
                             'array); give numbers, or strings for id') from None
      where = f'field {key!r}: ' if key is not None else ''
      raise errors.DataError(f'{path}: {where}unreadable npz ({errors.one_line(e)})') from None
    ids = arrays.get('id')
    arrays = self._check(path, arrays)
    n = len(next(iter(arrays.values())))
    if ids is not None and len(ids) != n:
      raise errors.DataError(f'{path}: field \'id\' has {len(ids)} entries for {n} examples')
    return [f'{path}#{i}' for i in range(n)] if ids is None else list(map(str, ids)), arrays

  def _csv(self, path: str):
    try:
      rows = base.read_csv(path, 'a feature CSV: id and one column per feature', ())
    except OSError as e:
      raise errors.DataError(f'{path}: unreadable CSV ({errors.one_line(e)})') from None
    arrays = {}
    for k, shape in self.fields.items():
      if len(shape) > 1:
        raise errors.DataError(f'{path}: field {k!r} has examples of shape {shape}; a CSV '
                             'holds scalars and vectors only (use .npz)')
      cols = [k] if not shape else [f'{k}_{i}' for i in range(shape[0])]
      missing = [c for c in cols if c not in rows[0]]
      if missing:
        raise errors.DataError(f'{path}: field {k!r}: column {missing[0]!r} is missing '
                             f'(expected {cols[0]}{" .. " + cols[-1] if len(cols) > 1 else ""})')
      try:
        values = np.asarray([[float(r[c]) for c in cols] for r in rows])
      except (TypeError, ValueError):
        raise errors.DataError(f'{path}: field {k!r}: a value is not a number') from None
      arrays[k] = values if shape else values[:, 0]
    ids = [r['id'] if 'id' in r else f'{path}#{i}' for i, r in enumerate(rows)]
    return ids, self._check(path, arrays)

  def _media(self, files: list[str]):
    reader = self.reader
    video = [f for f in files if f.lower().endswith(VIDEO)]
    reads = getattr(reader, 'INPUTS', '')
    if not hasattr(reader, 'inputs_from_files') or (video and not getattr(
        reader, 'READS_VIDEO', False)):
      raise errors.DataError(
          f'{(video or files)[0]}: this run ({self.card["config"]}) reads '
          + (f'{reads}, not video' if reads else
             f'{", ".join(self.card["modalities"])} features, not audio or video files; '
             'give an .npz or .csv of its fields'))
    arrays = reader.inputs_from_files(files, self.card['preprocess'], self.preprocess_arrays)
    return list(files), self._check(files[0], arrays)


def evaluate(workdir: str, split: str = 'test') -> dict:
  """Metrics of a finished run's best checkpoint on one split of its dataset, with the
  config it was trained with (config.json); nothing is trained or written."""
  from affectjax import experiment
  config = read_config(workdir)
  if split not in ('train', 'valid', 'test'):
    raise errors.ConfigError(f'--split {split}: train | valid | test')
  exp, eval_step, params, dataset = experiment.load_trained(config, workdir)
  if split not in dataset.splits:
    raise errors.ConfigError(f'--split {split}: the dataset has '
                             f'{", ".join(sorted(dataset.splits))}')
  return experiment.evaluate(exp, eval_step, params, dataset.splits[split],
                             config.train.eval_batch_size, dataset.splits['train'])


def load_run(workdir: str, unfinished: bool = False) -> Run:
  """The finished run in `workdir`, ready to `predict` (see the module docstring)."""
  return Run(workdir, unfinished)


def write_sample_inputs(workdir: str, out: str, split: str = 'test', count: int = 8) -> dict:
  """The first `count` examples of a split of the run's own dataset as a `.npz` that
  `predict` reads (one array per input field, an `id` per example, and the true `label`,
  which predict ignores): a first input for any family, and a template of the shapes a
  run expects. Written atomically; reads the data directory as training did."""
  from affectjax import workdir as workdir_lib
  from affectjax.data import get_dataset
  if count < 1:
    raise errors.ConfigError(f'--count {count}: must be >= 1')
  if not out.endswith('.npz'):
    raise errors.ConfigError(f'--out {out}: must end in .npz')
  config = read_config(workdir)
  dataset = get_dataset(config)
  if split not in dataset.splits:
    raise errors.ConfigError(f'--split {split}: the dataset has '
                             f'{", ".join(sorted(dataset.splits))}')
  source = dataset.splits[split]
  n = min(count, len(source))
  batch = source.get_batch(np.arange(n))
  fields = [k for k in read_card(workdir)['element_spec'] if k != 'label']
  arrays = {k: np.asarray(batch[k]) for k in fields}
  arrays['id'] = np.asarray([f'{split}#{i}' for i in range(n)])
  if 'label' in batch:
    arrays['label'] = np.asarray(batch['label'])
  workdir_lib.write_atomic(out, 'the sample inputs', lambda f: np.savez(f, **arrays),
                           mode='wb')
  return {'out': out, 'split': split, 'examples': n, 'fields': fields}


def write_rows(rows: list[dict], path: str) -> None:
  """Predictions as JSONL (`.jsonl`, or '-' for stdout) or CSV (`.csv`)."""
  from affectjax import workdir as workdir_lib
  if path.endswith('.csv'):
    keys = ['id', 'label' if 'label' in rows[0] else 'score']
    probs = list(rows[0].get('probabilities', {}))
    header = keys + [f'p_{n}' for n in probs]

    def write(f):
      w = csv.writer(f)
      w.writerow(header)
      for r in rows:
        w.writerow([r[k] for k in keys] + [r['probabilities'][n] for n in probs])
    workdir_lib.write_atomic(path, 'the predictions', write)
    return
  text = ''.join(json.dumps(r) + '\n' for r in rows)
  if path in ('', '-'):
    print(text, end='')
  else:
    workdir_lib.write_atomic(path, 'the predictions', lambda f: f.write(text))
