"""The bad-input corpus: every case ends in exit status 2 and one line on stderr that names
the file (or the config field), with no traceback and nothing written to the workdir.

Each case writes its own small input (configs, MOSI npz, MMSA and IEMOCAP pickles, MELD
and EmoryNLP CSVs, encoder folders, RAVDESS audio) under the test's tmp directory, then
runs the real command line in this process (`affectjax.main.main`).
"""

import csv
import io
import json
import os
import pickle
import time

import numpy as np
import pytest

from affectjax import main as main_lib
from conftest import config_path

# -- inputs ----------------------------------------------------------------------------------


def mosi_arrays(train_videos=12, test_videos=4, per_video=3, seed=0):
  """A small file in the layout of mosi/mosi_utterances.npz (Poria et al. 2017)."""
  rng = np.random.default_rng(seed)
  rows = [(f'v{v:02d}', s) for v in range(train_videos + test_videos)
          for s in range(1, per_video + 1)]
  n = len(rows)
  return {
      'id': np.asarray([f'{v}_{s}' for v, s in rows]),
      'video_id': np.asarray([v for v, _ in rows]),
      'segment': np.asarray([s for _, s in rows], np.int64),
      'sentiment': rng.uniform(-3, 3, n),
      'split': np.asarray(['train' if int(v[1:]) < train_videos else 'test'
                           for v, _ in rows]),
      'text_feat': rng.normal(size=(n, 100)).astype(np.float32),
      'audio_feat': rng.normal(size=(n, 73)).astype(np.float32),
      'video_feat': rng.normal(size=(n, 100)).astype(np.float32),
  }


def mmsa_data(seed=0):
  rng = np.random.default_rng(seed)

  def split(n, start):
    return {'text': rng.normal(size=(n, 5, 7)).astype(np.float32),
            'audio': rng.normal(size=(n, 4, 3)).astype(np.float32),
            'vision': rng.normal(size=(n, 4, 2)).astype(np.float32),
            'regression_labels': rng.uniform(-3, 3, n).astype(np.float32),
            'id': np.asarray([f'vid{(start + i) // 3}$_${i % 3}' for i in range(n)])}
  return {'train': split(24, 0), 'valid': split(9, 100), 'test': split(9, 200)}


def iemocap_data():
  ids = [f'Ses0{1 + i // 4}_dlg{i:02d}' for i in range(16)]
  n = {v: 3 + i % 4 for i, v in enumerate(ids)}
  return [
      {v: ['M' if j % 2 else 'F' for j in range(n[v])] for v in ids},
      {v: [j % 6 for j in range(n[v])] for v in ids},
      {v: [f'utterance {j} of {v}' for j in range(n[v])] for v in ids},
      ids[:10], ids[13:], ids[10:13],
  ]


def features_data():
  rng = np.random.default_rng(0)
  ids = [f'Ses0{1 + i // 4}_dlg{i:02d}' for i in range(14)]
  n = {v: 3 + i % 4 for i, v in enumerate(ids)}
  return [
      {v: [f'{v}_u{j}' for j in range(n[v])] for v in ids},
      {v: ['M' if j % 2 else 'F' for j in range(n[v])] for v in ids},
      {v: [j % 6 for j in range(n[v])] for v in ids},
      {v: rng.normal(size=(n[v], 16)).astype(np.float32) for v in ids},
      {v: rng.normal(size=(n[v], 8)).astype(np.float32) for v in ids},
      {v: rng.normal(size=(n[v], 12)).astype(np.float32) for v in ids},
      {v: [f'utterance {j} of {v}' for j in range(n[v])] for v in ids},
      ids[:10], ids[10:],
  ]


MELD_COLUMNS = ['Sr No.', 'Utterance', 'Speaker', 'Emotion', 'Sentiment', 'Dialogue_ID',
                'Utterance_ID', 'Season', 'Episode', 'StartTime', 'EndTime']


def meld_rows(dialogues=4):
  rows = []
  for d in range(dialogues):
    for u in range(3):
      rows.append({'Sr No.': len(rows) + 1, 'Utterance': f'line {u} of {d}',
                   'Speaker': 'Joey' if u % 2 else 'Rachel', 'Emotion': 'joy',
                   'Sentiment': 'positive', 'Dialogue_ID': d, 'Utterance_ID': u,
                   'Season': 1, 'Episode': 1, 'StartTime': '0', 'EndTime': '1'})
  return rows


def csv_text(rows, columns):
  out = io.StringIO()
  w = csv.DictWriter(out, columns)
  w.writeheader()
  w.writerows(rows)
  return out.getvalue()


EMORY_COLUMNS = ['Utterance', 'Speaker', 'Emotion', 'Scene_ID', 'Utterance_ID', 'Season',
                 'Episode', 'Start_Time', 'End_Time']


def emory_rows(scenes=4):
  rows = []
  for s in range(scenes):
    for u in range(3):
      rows.append({'Utterance': f'line {u}', 'Speaker': "['Monica Geller']",
                   'Emotion': 'Joyful', 'Scene_ID': s, 'Utterance_ID': u, 'Season': 1,
                   'Episode': 1, 'Start_Time': '0', 'End_Time': '1'})
  return rows


class Case:
  """One bad input: files to write, the command, and what its one line must name."""

  def __init__(self, tmp):
    self.tmp = tmp
    self.data = tmp / 'data'
    self.workdir = tmp / 'run'

  def write(self, rel, content):
    path = self.data / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
      path.write_bytes(content)
    else:
      path.write_text(content)
    return path

  def pickle(self, rel, obj):
    return self.write(rel, pickle.dumps(obj))

  def npz(self, arrays, rel='mosi/mosi_utterances.npz'):
    path = self.data / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
      np.savez(f, **arrays)
    return path

  def train(self, config, *overrides):
    return ['train', '--config', config_path(config) if '/' not in config else config,
            '--workdir', str(self.workdir), *[f'--config.{o}' for o in overrides]]

  def data_overrides(self):
    return [f'data.dir={self.data}', f'data.tfds_dir={self.tmp / "tfds"}']

  def erc(self, config='erc.py:dialoguegcn,smoke', *overrides):
    self.data.mkdir(exist_ok=True)
    return self.train(config, *self.data_overrides(), f'data.cache_dir={self.tmp / "feat"}',
                      *overrides)

  def mosi(self, *overrides, config='mosi.py:tfn,smoke'):
    self.data.mkdir(exist_ok=True)
    return self.train(config, *self.data_overrides(), *overrides)


def _mosi_case(mutate, fragment):
  def build(c):
    arrays = mosi_arrays()
    mutate(arrays)
    c.npz(arrays)
    return c.mosi(), fragment
  return build


def _pickled(make, rel, command):
  """Cases over one pickled input: `make()` builds it valid, a case's `mutate` breaks it."""
  def case(mutate, fragment):
    def build(c):
      data = make()
      mutate(data)
      c.pickle(rel, data)
      return command(c), fragment
    return build
  return case


_mmsa_case = _pickled(mmsa_data, 'mosei/x.pkl',
                      lambda c: c.mosi('data.source=mmsa', 'data.file=mosei/x.pkl'))
_iemocap_case = _pickled(iemocap_data, 'iemocap/iemocap_conversations.pkl', lambda c: c.erc())
_features_case = _pickled(features_data, 'iemocap/IEMOCAP_features.pkl',
                          lambda c: c.erc('erc.py:dialoguegcn,iemocap_features,smoke'))


def _meld_case(files, fragment, *overrides):
  """`files`: {split name: text or bytes}; the other CSVs are valid."""
  def build(c):
    for name in ('train', 'dev', 'test'):
      content = files.get(name, csv_text(meld_rows(), MELD_COLUMNS))
      if content is not None:
        c.write(f'meld/{name}_sent_emo.csv', content)
    return c.erc('erc.py:meld,dialoguegcn,smoke', *overrides), fragment
  return build


def _emory_case(files, fragment):
  def build(c):
    for name in ('train', 'dev', 'test'):
      content = files.get(name, csv_text(emory_rows(), EMORY_COLUMNS))
      if content is not None:
        c.write(f'emorynlp/emorynlp_{name}_final.csv', content)
    return c.erc('erc.py:dialoguegcn,emorynlp,smoke'), fragment
  return build


def _synthetic(*overrides, fragment, config='synthetic.py:tfn,smoke'):
  return lambda c: (c.train(config, *overrides), fragment)


def _config_file(text, fragment, arg='', name='cfg.py'):
  def build(c):
    path = c.tmp / name
    path.write_text(text)
    return c.train(f'{path}{arg}'), fragment
  return build


class _Evil:
  def __reduce__(self):
    return (os.system, ('echo pwned',))


def _set(key, value):
  def mutate(d):
    d[key] = value
  return mutate


def _meld_with(mutate_rows):
  rows = meld_rows()
  mutate_rows(rows)
  return csv_text(rows, MELD_COLUMNS)


def _emory_with(mutate_rows):
  rows = emory_rows()
  mutate_rows(rows)
  return csv_text(rows, EMORY_COLUMNS)


def _encoder_folder(config_json):
  def build(c):
    folder = c.tmp / 'enc'
    folder.mkdir()
    (folder / 'config.json').write_text(config_json)
    (folder / 'model.safetensors').write_bytes(b'\0' * 64)
    (folder / 'tokenizer.json').write_text('{}')
    c.pickle('iemocap/iemocap_conversations.pkl', iemocap_data())
    return c.erc('erc.py:dialoguegcn,smoke', f'data.encoder={folder}'), 'config.json'
  return build


def _ravdess(write_files, fragment):
  def build(c):
    write_files(c)
    return c.train('ravdess_speech.py:ssm,smoke', f'data.dir={c.data}'), fragment
  return build


def _flac(c, name, data=None):
  import soundfile
  path = c.data / 'ravdess' / 'speech_16k' / 'Actor_01' / name
  path.parent.mkdir(parents=True, exist_ok=True)
  if data is None:
    soundfile.write(str(path), np.zeros(1600, np.float32), 16000, format='FLAC')
  else:
    path.write_bytes(data)


def _folds(c):
  folds = {f'split{k:02d}': [4 * k - 3 + i for i in range(4)] for k in range(1, 7)}
  c.write('ravdess/actor_folds.json', json.dumps({'test_actors_per_fold': folds}))


def _other(args, fragment):
  return lambda c: ([a.replace('{W}', str(c.workdir)).replace('{T}', str(c.tmp)) for a in args],
                    fragment)


def _finished_run_then(args, fragment):
  def build(c):
    assert main_lib.main(c.train('synthetic.py:tfn,smoke', 'train.num_steps=4',
                                 'train.eval_every=2', 'train.log_every=2')) == 0
    c.existing = True
    return [a.replace('{W}', str(c.workdir)).replace('{T}', str(c.tmp)) for a in args], \
        fragment
  return build


def _workdir_is_a_file(c):
  c.workdir.write_text('not a directory')
  c.existing = True
  return c.train('synthetic.py:tfn,smoke'), str(c.workdir)


def _workdir_under_a_file(c):
  (c.tmp / 'afile').write_text('x')
  c.workdir = c.tmp / 'afile' / 'run'
  return c.train('synthetic.py:tfn,smoke'), 'afile/run'


def _read_only_workdir_parent(c):
  """As root, permissions do not stop a write; a read-only file system does."""
  import subprocess
  ro = c.tmp / 'ro'
  ro.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(ro)],
                    capture_output=True).returncode:
    pytest.skip('mounting a read-only tmpfs is not allowed here')
  c.cleanup = lambda: subprocess.run(['umount', str(ro)], check=False)
  c.workdir = ro / 'run'
  return c.train('synthetic.py:tfn,smoke'), 'ro/run: cannot create the workdir: read-only'


def _data_dir_without_mosi(c):
  c.data.mkdir()
  (c.data / 'README').write_text('nothing here')
  return c.mosi(), 'mosi_utterances.npz'


def _replace_mosi_field(field, value):
  return _mosi_case(_set(field, value), field)


def _drop(key):
  def mutate(d):
    del d[key]
  return mutate


def _mmsa_split(name, mutate_split):
  def mutate(d):
    mutate_split(d[name])
  return mutate


CASES = {
    # The command line and config files.
    'config file missing': _other(['train', '--config', 'no/such/cfg.py', '--workdir', '{W}'],
                                  'no/such/cfg.py'),
    'config path is a directory': _other(['train', '--config', '{T}', '--workdir', '{W}'],
                                         'config file not found'),
    'config syntax error': _config_file('def get_config(:\n', 'cfg.py'),
    'config import raises': _config_file('import no_such_module_here\n', 'cfg.py'),
    'config without get_config': _config_file('x = 1\n', 'has no get_config'),
    'get_config raises': _config_file('def get_config():\n  raise KeyError("typo")\n',
                                      'get_config() failed'),
    'get_config returns a dict': _config_file('def get_config():\n  return {}\n',
                                              'must return a ConfigDict'),
    'mesh rule not a pair': _synthetic("mesh.rules=(('mlp',),)",
                                      fragment="config.mesh.rules: ('mlp',) is not a"),
    'mesh rule unknown logical axis': _synthetic("mesh.rules=(('mlps', 'model'),)",
                                                 fragment="logical axis 'mlps' is not one"),
    'mesh rule unknown mesh axis': _synthetic("mesh.rules=(('mlp', 'tensor'),)",
                                              fragment='maps to an unknown mesh axis'),
    'coordinator without a port': _other(['train', '--config', config_path('synthetic.py:tfn'),
                                          '--workdir', '{W}', '--coordinator', 'localhost',
                                          '--num-processes', '2', '--process-id', '0'],
                                         '--coordinator localhost: expected HOST:PORT'),
    'get_config calls sys.exit': _config_file('import sys\ndef get_config():\n  sys.exit(3)\n',
                                              'get_config() called sys.exit(3)'),
    'config import calls sys.exit': _config_file('import sys\nsys.exit("no")\n',
                                                 "called sys.exit('no') while being imported"),
    'ConfigDict without a group': _config_file(
        'import ml_collections\ndef get_config():\n'
        '  return ml_collections.ConfigDict({"name": "x", "seed": 0})\n',
        'get_config() returned no config.data'),
    'unknown variant': _other(['train', '--config', config_path('synthetic.py:tfn,bogus'),
                               '--workdir', '{W}'], "unknown config variant 'bogus'"),
    'unknown key': _synthetic('model.nonexistent=3', fragment='model.nonexistent'),
    'unknown group': _synthetic('nothere.x=3', fragment='nothere'),
    'int given text': _synthetic('train.batch_size=big', fragment='train.batch_size'),
    'int given float': _synthetic('train.num_steps=1.5', fragment='train.num_steps'),
    'bool given text': _other(['train', '--config', config_path('synthetic.py:tfn,smoke'),
                               '--workdir', '{W}', '--config.model.dropout_rng_bits=maybe'],
                              'model.dropout_rng_bits'),
    'group given a scalar': _synthetic('model=3', fragment='is a group'),
    'override without value': _other(['train', '--config', config_path('synthetic.py:tfn'),
                                      '--workdir', '{W}', '--config.seed'], '--config.seed'),
    'unknown command': _other(['fly', '--config', 'x'], "invalid choice: 'fly'"),
    'missing --workdir': _other(['train', '--config', config_path('synthetic.py:tfn')],
                                '--workdir'),
    # Optimizer and schedule values.
    'negative learning rate': _synthetic('optim.learning_rate=-0.001',
                                         fragment='config.optim.learning_rate'),
    'zero learning rate': _synthetic('optim.learning_rate=0.0',
                                     fragment='config.optim.learning_rate'),
    'infinite learning rate': _synthetic('optim.learning_rate=1e999',
                                         fragment='config.optim.learning_rate'),
    'negative weight decay': _synthetic('optim.weight_decay=-1.0',
                                        fragment='config.optim.weight_decay'),
    'negative grad clip': _synthetic('optim.grad_clip=-1.0', fragment='config.optim.grad_clip'),
    'negative pretrained rate': _synthetic('optim.pretrained_learning_rate=-1e-5',
                                           fragment='config.optim.pretrained_learning_rate'),
    'unknown optimizer': _synthetic('optim.name=lion', fragment='config.optim.name'),
    'unknown schedule': _synthetic('optim.schedule=step', fragment='config.optim.schedule'),
    'warmup longer than run': _synthetic('optim.warmup_steps=100',
                                         fragment='config.optim.warmup_steps=100'),
    'negative warmup': _synthetic('optim.warmup_steps=-5', fragment='config.optim.warmup_steps'),
    'warmup on constant schedule': _synthetic('optim.schedule=constant', 'optim.warmup_steps=5',
                                              fragment='config.optim.warmup_steps=5'),
    # Training loop values.
    # Model and data values outside their declared ranges (config.check_ranges).
    'dropout of one': _synthetic('model.post_fusion_dropout=1.0',
                                 fragment='config.model.post_fusion_dropout: must be in [0, 1)'),
    'negative per-modality dropout': _synthetic('model.dropouts.audio=-0.1',
                                                fragment='config.model.dropouts.audio'),
    'zero depth': _synthetic('model.subnet_depth=0', fragment='config.model.subnet_depth: must '
                             'be > 0'),
    'negative width': _synthetic('model.post_fusion_dim=-4', fragment='config.model.post_fusion_dim'),
    'NaN data noise': _synthetic('data.noise=nan', fragment='config.data.noise'),
    'repeated modality': _synthetic("data.modalities=('text','text')",
                                    fragment='config.data.modalities: must name at least one'),
    'no modality': _synthetic('data.modalities=()', fragment='config.data.modalities'),
    'zero seconds of audio': _synthetic('data.max_seconds=0.0', config='ravdess_speech.py:ssm,smoke',
                                        fragment='config.data.max_seconds: must be > 0'),
    'zero hop': _synthetic('data.hop_ms=0.0', config='ravdess_speech.py:ssm,smoke',
                           fragment='config.data.hop_ms'),
    'negative top_db': _synthetic('data.top_db=-40.0', config='ravdess_speech.py:ssm,smoke',
                                  fragment='config.data.top_db'),
    'zero mel bands': _synthetic('data.n_mels=0', config='ravdess_speech.py:ssm,smoke',
                                 fragment='config.data.n_mels'),
    'zero batch size': _synthetic('train.batch_size=0', fragment='config.train.batch_size'),
    'zero steps': _synthetic('train.num_steps=0', fragment='config.train.num_steps'),
    'zero eval interval': _synthetic('train.eval_every=0', fragment='config.train.eval_every'),
    'negative log interval': _synthetic('train.log_every=-1', fragment='config.train.log_every'),
    'zero eval batch': _synthetic('train.eval_batch_size=0',
                                  fragment='config.train.eval_batch_size'),
    'zero checkpoints kept': _synthetic('train.keep_checkpoints=0',
                                        fragment='config.train.keep_checkpoints'),
    'bad select mode': _synthetic('train.select_mode=median', fragment='config.train.select_mode'),
    'unknown select metric': _synthetic('train.select_metric=bleu',
                                        fragment='config.train.select_metric'),
    'batch not divisible by devices': _synthetic('train.batch_size=13',
                                                 fragment='config.train.batch_size=13'),
    'eval batch not divisible': _synthetic('train.eval_batch_size=12',
                                           fragment='config.train.eval_batch_size=12'),
    'negative seed': _synthetic('seed=-1', fragment='config.seed'),
    'seed too large': _synthetic('seed=4294967296', fragment='config.seed'),
    'batch larger than the split': _synthetic('data.num_train=16', 'train.batch_size=64',
                                              fragment='fewer than one batch of 64'),
    'eval batch too large for memory': _synthetic('train.eval_batch_size=68719476736',
                                                  fragment='config.train.eval_batch_size'),
    # Mesh, task, model.
    'model axis does not divide devices': _synthetic('mesh.model=3', fragment='mesh'),
    'mesh larger than devices': _synthetic('mesh.data=4', 'mesh.model=4', fragment='mesh'),
    'unknown task': _synthetic('task.name=ranking', fragment='ranking'),
    'unknown loss': _synthetic('task.loss=hinge', fragment='hinge'),
    'regression loss for a classifier': _synthetic(
        'task.loss=mse', fragment="config.task.loss: 'mse' does not fit task 'classification' "
        '(cross_entropy)'),
    'sentiment metrics for a classifier': _synthetic(
        'task.metrics=sentiment', fragment="config.task.metrics: 'sentiment' does not fit "
        "task 'classification' (classification)"),
    'one class': _synthetic('task.num_classes=1', fragment='config.task.num_classes'),
    'unknown model module': _synthetic('model.name=nothere.Model', fragment='nothere'),
    'unknown model class': _synthetic('model.name=tensor_fusion.Nope', fragment='Nope'),
    # Datasets by name, synthetic values.
    'unknown dataset': _synthetic('data.name=imagenet', fragment='config.data.name'),
    'module that is not a dataset': _synthetic('data.name=pipeline', fragment='config.data.name'),
    'dataset name with a path': _synthetic('data.name=../train', fragment='config.data.name'),
    'data dir missing': _synthetic('data.dir=/no/such/dir', fragment='/no/such/dir'),
    'negative noise': _synthetic('data.noise=-1.0', fragment='config.data.noise'),
    'zero training examples': _synthetic('data.num_train=0', fragment='config.data.num_train'),
    'unknown synthetic variant': _synthetic('data.variant=chaos', fragment='config.data.variant'),
    'wrong number of dims': _synthetic('data.dims=(3,4)', fragment='config.data.dims'),
    'unknown modality': _synthetic('data.modalities=smell', fragment='smell'),
    # The workdir.
    'workdir is a file': _workdir_is_a_file,
    'workdir under a file': _workdir_under_a_file,
    'workdir on a read-only file system': _read_only_workdir_parent,
    # MOSI (Poria npz).
    'data dir without the MOSI file': _data_dir_without_mosi,
    'MOSI file is not an npz': lambda c: (c.write('mosi/mosi_utterances.npz', b'\x89junk' * 50)
                                          and c.mosi(), 'mosi_utterances.npz'),
    'MOSI field missing': _mosi_case(_drop('audio_feat'), "'audio_feat' is missing"),
    'MOSI field with wrong rank': _mosi_case(
        lambda d: d.update(text_feat=d['text_feat'][:, :, None]), "'text_feat'"),
    'MOSI modalities with different rows': _mosi_case(
        lambda d: d.update(video_feat=d['video_feat'][:-5]), "'video_feat' has 43 rows"),
    'MOSI labels outside [-3, 3]': _mosi_case(
        lambda d: d.update(sentiment=d['sentiment'] * 1000), "'sentiment' has"),
    'MOSI float ids': _mosi_case(lambda d: d.update(id=np.arange(len(d['id'])) + 0.5),
                                 "field 'id' row 0: 0.5 is not a non-empty string"),
    'MOSI float video ids': _mosi_case(
        lambda d: d.update(video_id=np.arange(len(d['id'])) + 0.5),
        "field 'video_id' row 0: 0.5 is not a non-empty string"),
    'MOSI fractional segments': _mosi_case(lambda d: d.update(segment=d['segment'] + 0.5),
                                           "field 'segment' must hold whole numbers"),
    'MOSI NaN label': _mosi_case(lambda d: d['sentiment'].__setitem__(4, np.nan),
                                 "'sentiment' has 1 values outside"),
    'MOSI NaN features': _mosi_case(lambda d: d['text_feat'].__setitem__((7, 3), np.nan),
                                    "field 'text_feat' has 1 NaN/inf values (first in row 7)"),
    'MOSI wrong feature width': _mosi_case(
        lambda d: d.update(text_feat=d['text_feat'][:, :99]), "'text_feat' has 99 features"),
    'MOSI no training utterances': _mosi_case(
        lambda d: d.update(split=np.full(len(d['split']), 'test')), "0 training videos"),
    'MOSI too few training videos': _mosi_case(
        lambda d: d.update(split=np.where(np.isin(d['video_id'], ['v00', 'v01']), 'train',
                                          'test')), '2 training videos'),
    'MOSI no test utterances': _mosi_case(
        lambda d: d.update(split=np.full(len(d['split']), 'train')), 'no test utterances'),
    'MOSI unknown split name': _mosi_case(
        lambda d: d['split'].__setitem__(0, 'dev'), "'split' has 'dev'"),
    'MOSI object arrays (pickle)': _mosi_case(
        lambda d: d.update(id=d['id'].astype(object)), 'mosi_utterances.npz'),
    'MOSI text labels': _mosi_case(lambda d: d.update(sentiment=d['sentiment'].astype(str)),
                                   "'sentiment'"),
    'MOSI unknown source': lambda c: (c.npz(mosi_arrays()) and c.mosi('data.source=sdk'),
                                      'config.data.source'),
    'MOSI unknown mode': lambda c: (c.npz(mosi_arrays()) and c.mosi('data.mode=frames'),
                                    'config.data.mode'),
    # MMSA pickles.
    'MMSA without file': lambda c: (c.mosi('data.source=mmsa'), 'config.data.file'),
    'MMSA file missing': lambda c: (c.mosi('data.source=mmsa', 'data.file=mosei/none.pkl'),
                                    'none.pkl'),
    'MMSA malicious pickle': lambda c: (c.pickle('mosei/x.pkl', {'train': _Evil()}) and
                                        c.mosi('data.source=mmsa', 'data.file=mosei/x.pkl'),
                                        'x.pkl'),
    'MMSA truncated pickle': lambda c: (c.write('mosei/x.pkl',
                                                pickle.dumps(mmsa_data())[:500]) and
                                        c.mosi('data.source=mmsa', 'data.file=mosei/x.pkl'),
                                        'x.pkl'),
    'MMSA top level is a list': lambda c: (c.pickle('mosei/x.pkl', [1, 2]) and
                                           c.mosi('data.source=mmsa', 'data.file=mosei/x.pkl'),
                                           'top level is list'),
    'MMSA split missing': _mmsa_case(_drop('valid'), "split 'valid' is missing"),
    'MMSA field missing': _mmsa_case(_mmsa_split('test', lambda s: s.pop('vision')),
                                     "field 'vision' is missing"),
    'MMSA wrong rank': _mmsa_case(_mmsa_split('train', lambda s: s.update(
        audio=s['audio'][:, 0])), "field 'audio' has shape"),
    'MMSA labels outside [-3, 3]': _mmsa_case(_mmsa_split('train', lambda s: s.update(
        regression_labels=s['regression_labels'] + 10)), "'regression_labels' has"),
    'MMSA rows differ': _mmsa_case(_mmsa_split('valid', lambda s: s.update(
        text=s['text'][:4])), "field 'text' has 4 rows"),
    'MMSA empty split': _mmsa_case(_mmsa_split('test', lambda s: s.update(
        {k: v[:0] for k, v in s.items()})), "split 'test' is empty"),
    'MOSI id repeated': _mosi_case(lambda d: d['id'].__setitem__(1, d['id'][0]),
                                   "field 'id' has"),
    'MOSI id empty': _mosi_case(lambda d: d['id'].__setitem__(2, ''), "field 'id' row 2"),
    'MMSA id repeated': _mmsa_case(_mmsa_split('train', lambda s: s['id'].__setitem__(
        3, s['id'][0])), "train: field 'id' has 'vid0$_$0' 2 times"),
    'MMSA id None': _mmsa_case(_mmsa_split('valid', lambda s: s.update(
        id=np.asarray([None] * 9, dtype=object))), "valid: field 'id' row 0: None"),
    'MMSA lengths of the wrong count': _mmsa_case(_mmsa_split('train', lambda s: s.update(
        audio_lengths=np.full(5, 4))), "field 'audio_lengths' has 5 entries for 24 rows"),
    'MMSA lengths longer than the sequence': _mmsa_case(_mmsa_split('test', lambda s: s.update(
        text_lengths=np.full(9, 6))), "field 'text_lengths' must hold whole numbers in [0, 5]"),
    'MMSA negative lengths': _mmsa_case(_mmsa_split('valid', lambda s: s.update(
        vision_lengths=np.full(9, -1))), "field 'vision_lengths' must hold whole numbers"),
    'MMSA splits of different lengths': _mmsa_case(_mmsa_split('test', lambda s: s.update(
        audio=np.zeros((9, 6, 3), np.float32))), "field 'audio' has (steps, features) train"),
    'MMSA text labels': _mmsa_case(_mmsa_split('train', lambda s: s.update(
        regression_labels=np.asarray(['pos'] * 24))), "'regression_labels' is not numeric"),
    # IEMOCAP conversation pickle.
    'IEMOCAP file missing': lambda c: (c.erc(), 'iemocap_conversations.pkl'),
    'IEMOCAP malicious pickle': _iemocap_case(lambda d: d.__setitem__(0, _Evil()),
                                              'iemocap_conversations.pkl'),
    'IEMOCAP wrong layout': lambda c: (c.pickle('iemocap/iemocap_conversations.pkl', {'a': 1})
                                       and c.erc(), 'expected a 6-element list'),
    'IEMOCAP deeply nested labels': _iemocap_case(
        lambda d: d[1].__setitem__('Ses01_dlg00', [[[0]], [[1]], [[2]]]),
        "field 'labels' has [[0]] at utterance 0, expected a class index"),
    'IEMOCAP string labels': _iemocap_case(
        lambda d: d[1].__setitem__('Ses01_dlg00', ['hap', 'sad', 'neu']),
        "field 'labels' has 'hap' at utterance 0"),
    'IEMOCAP label out of range': _iemocap_case(
        lambda d: d[1].__setitem__('Ses01_dlg01', [0, 9, 1, 2]), "outside [0, 6)"),
    'IEMOCAP empty test split': _iemocap_case(lambda d: d.__setitem__(4, []),
                                              "split 'test' has no dialogues"),
    'IEMOCAP dialogue without speakers': _iemocap_case(
        lambda d: d[0].pop('Ses01_dlg02'), "has no speakers"),
    'IEMOCAP dialogue in train and test': _iemocap_case(
        lambda d: d[4].append('Ses01_dlg00'),
        "dialogue 'Ses01_dlg00' is in field 'train_ids' and in 'test_ids': a dialogue in two"),
    'IEMOCAP dialogue listed twice': _iemocap_case(
        lambda d: d[3].append('Ses01_dlg01'), "'Ses01_dlg01' is listed twice in field 'train_ids'"),
    'IEMOCAP id None': _iemocap_case(lambda d: d[5].append(None),
                                     "field 'valid_ids': dialogue id None is a NoneType"),
    'IEMOCAP id a list': _iemocap_case(lambda d: d[3].append(['Ses01_dlg00']),
                                       "field 'train_ids': dialogue id ['Ses01_dlg00'] is a list"),
    'IEMOCAP features dialogue in train and test': _features_case(
        lambda d: d[8].append(d[7][0]), "is in field 'trainVid' and in 'testVid'"),
    'IEMOCAP lengths differ': _iemocap_case(
        lambda d: d[2].__setitem__('Ses01_dlg03', ['only one']), "field 'texts' has 1"),
    'unknown ERC corpus': lambda c: (c.erc('erc.py:dialoguegcn,smoke', 'data.corpus=friends'),
                                     'config.data.corpus'),
    'unknown label field': lambda c: (c.pickle('iemocap/iemocap_conversations.pkl',
                                               iemocap_data()) and
                                      c.erc('erc.py:dialoguegcn,smoke',
                                            'data.label_field=arousal'),
                                      'config.data.label_field'),
    'negative text context': lambda c: (c.pickle('iemocap/iemocap_conversations.pkl',
                                                 iemocap_data()) and
                                        c.erc('erc.py:dialoguegcn,smoke',
                                              'data.text_context=-1'),
                                        'config.data.text_context'),
    'max utterances too small': lambda c: (c.pickle('iemocap/iemocap_conversations.pkl',
                                                    iemocap_data()) and
                                           c.erc('erc.py:dialoguegcn,smoke',
                                                 'data.max_utterances=2'),
                                           'config.data.max_utterances=2'),
    'unknown text mode': lambda c: (c.pickle('iemocap/iemocap_conversations.pkl',
                                             iemocap_data()) and
                                    c.erc('erc.py:dialoguegcn,smoke', 'data.text=audio'),
                                    'config.data.text'),
    'encoder folder missing': lambda c: (c.pickle('iemocap/iemocap_conversations.pkl',
                                                  iemocap_data()) and
                                         c.erc('erc.py:dialoguegcn,smoke',
                                               f'data.encoder={c.tmp / "noenc"}'),
                                         'noenc'),
    'encoder config.json broken': _encoder_folder('{"hidden_size": 38'),
    'encoder config.json wrong type': _encoder_folder('{"hidden_size": "big", "vocab_size": 5,'
                                                      ' "num_hidden_layers": 1, '
                                                      '"num_attention_heads": 1, '
                                                      '"intermediate_size": 4, '
                                                      '"max_position_embeddings": 8, '
                                                      '"type_vocab_size": 1, '
                                                      '"layer_norm_eps": 1e-12}'),
    'encoder config.json missing field': _encoder_folder('{"hidden_size": 8}'),
    # IEMOCAP_features.pkl layout.
    'features pickle wrong length': lambda c: (c.pickle('iemocap/IEMOCAP_features.pkl',
                                                        features_data()[:5]) and
                                               c.erc('erc.py:dialoguegcn,'
                                                     'iemocap_features,smoke'),
                                               'IEMOCAP_features.pkl'),
    'features NaN': _features_case(lambda d: d[4]['Ses01_dlg00'].__setitem__((0, 0), np.inf),
                                   "field 'audio' must be finite"),
    'features width differs': _features_case(
        lambda d: d[3].__setitem__('Ses01_dlg01', np.zeros((4, 15), np.float32)),
        "field 'text' has 15 features per utterance"),
    'features no training dialogues': _features_case(lambda d: d.__setitem__(7, []),
                                                     "'trainVid' has 0"),
    'features string labels': _features_case(
        lambda d: d[2].__setitem__('Ses01_dlg02', ['x'] * 5), "field 'labels' has 'x'"),
    'features missing entry': _features_case(lambda d: d[6].pop('Ses02_dlg05'),
                                             "'videoSentence' has no entry"),
    # MELD CSVs.
    'MELD CSVs missing': lambda c: (c.data.joinpath('meld').mkdir(parents=True) or
                                    c.erc('erc.py:meld,dialoguegcn,smoke'), 'train_sent_emo.csv'),
    'MELD empty CSV': _meld_case({'dev': ''}, 'dev_sent_emo.csv'),
    'MELD header-only CSV': _meld_case({'test': ','.join(MELD_COLUMNS) + '\n'},
                                       'test_sent_emo.csv: has a header but no rows'),
    'MELD UTF-16 CSV': _meld_case({'train': csv_text(meld_rows(), MELD_COLUMNS).encode(
        'utf-16')}, 'train_sent_emo.csv: holds NUL bytes'),
    'MELD binary CSV': _meld_case({'dev': bytes(range(256)) * 8}, 'dev_sent_emo.csv'),
    'MELD utterance over the field limit': _meld_case(
        {'train': _meld_with(lambda r: r[0].update(Utterance='x' * 200000))},
        'train_sent_emo.csv: line'),
    'MELD unterminated quote': _meld_case(
        {'dev': ','.join(MELD_COLUMNS) + '\n1,"never closed,Joey,joy,positive,0,0,1,1,0,1\n'},
        'dev_sent_emo.csv'),
    'MELD non-integer utterance id': _meld_case(
        {'train': _meld_with(lambda r: r[2].update(Utterance_ID='2a'))},
        "column 'Utterance_ID' is '2a'"),
    'MELD non-integer dialogue id': _meld_case(
        {'test': _meld_with(lambda r: r[1].update(Dialogue_ID='zero'))},
        "column 'Dialogue_ID' is 'zero'"),
    'MELD unknown emotion': _meld_case(
        {'train': _meld_with(lambda r: r[0].update(Emotion='bored'))},
        "unknown label 'bored'"),
    'MELD unknown sentiment': _meld_case(
        {'dev': _meld_with(lambda r: r[0].update(Sentiment='meh'))}, "unknown label 'meh'"),
    'MELD missing column': _meld_case(
        {'test': csv_text([{k: v for k, v in r.items() if k != 'Speaker'} for r in meld_rows()],
                          [c for c in MELD_COLUMNS if c != 'Speaker'])},
        "column 'Speaker' is missing"),
    'MELD short row': _meld_case(
        {'train': ','.join(MELD_COLUMNS) + '\n1,hello,Joey\n'}, 'train_sent_emo.csv: row 1'),
    'MELD audio, which only the features pickles have': _meld_case(
        {}, 'config.data.modalities', 'data.modalities=ta'),
    # EmoryNLP CSVs.
    'EmoryNLP CSVs missing': lambda c: (c.data.joinpath('emorynlp').mkdir(parents=True) or
                                        c.erc('erc.py:dialoguegcn,emorynlp,smoke'),
                                        'emorynlp_train_final.csv'),
    'EmoryNLP speaker cell that exhausts literal_eval': _emory_case(
        {'train': _emory_with(lambda r: r[0].update(Speaker='[' * 60000 + ']' * 60000)),
         'dev': _emory_with(lambda r: r[0].update(Emotion='Angry'))},
        "emorynlp_dev_final.csv: dialogue"),
    'EmoryNLP unknown emotion': _emory_case(
        {'test': _emory_with(lambda r: r[1].update(Emotion='Bored'))}, "unknown label 'Bored'"),
    'EmoryNLP non-integer utterance id': _emory_case(
        {'dev': _emory_with(lambda r: r[1].update(Utterance_ID='one'))},
        "column 'Utterance_ID' is 'one'"),
    'EmoryNLP header-only': _emory_case({'test': ','.join(EMORY_COLUMNS) + '\n'},
                                        'emorynlp_test_final.csv: has a header but no rows'),
    # RAVDESS speech.
    'RAVDESS without audio': _ravdess(lambda c: c.data.joinpath('ravdess').mkdir(parents=True),
                                      'speech_16k: no audio files'),
    'RAVDESS corrupt audio': _ravdess(
        lambda c: [_folds(c), _flac(c, '03-01-01-01-01-01-01.flac', b'fLaC' + b'\x00' * 100)],
        '03-01-01-01-01-01-01.flac: cannot decode audio'),
    'RAVDESS folds file missing': _ravdess(lambda c: _flac(c, '03-01-01-01-01-01-01.flac'),
                                           'actor_folds.json'),
    'RAVDESS folds file broken': _ravdess(
        lambda c: [_flac(c, '03-01-01-01-01-01-01.flac'),
                   c.write('ravdess/actor_folds.json', '{"test_actors_per_fold": [1, 2]}')],
        'actor_folds.json: field test_actors_per_fold'),
    'RAVDESS fold not in the file': lambda c: (
        [_folds(c), _flac(c, '03-01-01-01-01-01-01.flac')] and
        c.train('ravdess_speech.py:ssm,smoke', f'data.dir={c.data}', 'data.fold=9'),
        'config.data.fold: 9'),
    'RAVDESS bad file name': _ravdess(lambda c: _flac(c, 'hello.flac'), 'hello.flac'),
    'RAVDESS emotion out of range': _ravdess(lambda c: _flac(c, '03-01-09-01-01-01-01.flac'),
                                             '03-01-09-01-01-01-01.flac: field emotion'),
    # The other entry points.
    'compile: unknown topology': _other(['compile', '--config', config_path('synthetic.py:tfn'),
                                         '--topology', 'v99:1x1'], 'v99'),
    'sweep: grid without values': _other(['sweep', '--config', config_path('synthetic.py:tfn'),
                                          '--grid', 'model.post_fusion_dim', '--workdir', '{W}'],
                                         '--grid model.post_fusion_dim'),
    'sweep: zero seeds': _other(['sweep', '--config', config_path('synthetic.py:tfn'),
                                 '--seeds', '0', '--workdir', '{W}'], '--seeds'),
    'sweep: unknown key in a cell': _other(['sweep', '--config', config_path('synthetic.py:tfn'),
                                            '--grid', 'model.nope=1,2', '--workdir', '{W}'],
                                           'model.nope'),
    'robustness: no finished run': _other(['robustness', '--config',
                                           config_path('synthetic.py:tfn,smoke'),
                                           '--workdir', '{W}'], 'results.json'),
    'robustness: levels not numbers': _other(['robustness', '--config',
                                              config_path('synthetic.py:tfn,smoke'),
                                              '--workdir', '{W}', '--levels', 'a,b'],
                                             '--levels a,b'),
    'extract-features: not an ERC config': _other(['extract-features', '--config',
                                                   config_path('synthetic.py:tfn')],
                                                  'is not an ERC config'),
    'export-encoder: not a fine-tuning config': _finished_run_then(
        ['export-encoder', '--config', config_path('synthetic.py:tfn,smoke'), '--workdir',
         '{W}', '--out', '{T}/enc_out'], 'does not fine-tune a text encoder'),
    'robustness: other config than the run': _finished_run_then(
        ['robustness', '--config', config_path('synthetic.py:tfn,smoke'), '--workdir', '{W}',
         '--config.seed=5'], 'different config (first difference: seed)'),
    'train: results.json unreadable': None,  # Filled below (needs the finished run).
}


def _broken_results(c):
  assert main_lib.main(c.train('synthetic.py:tfn,smoke', 'train.num_steps=4',
                               'train.eval_every=2', 'train.log_every=2')) == 0
  (c.workdir / 'results.json').write_text('{"valid": ')
  c.existing = True
  return c.train('synthetic.py:tfn,smoke', 'train.num_steps=4', 'train.eval_every=2',
                 'train.log_every=2'), 'results.json: unreadable results'


CASES['train: results.json unreadable'] = _broken_results


def _foreign_results(c):
  # Only another run's results.json in the workdir: not a finished run of this config.
  c.workdir.mkdir(parents=True, exist_ok=True)
  (c.workdir / 'results.json').write_text('{"valid": {"accuracy": 1.0}, "test": {}}')
  c.existing = True
  return c.train('synthetic.py:tfn,smoke'), 'results.json: results of a run whose config.json'


CASES['train: only another run\'s results.json'] = _foreign_results


def _snapshot(path):
  if not os.path.exists(path):
    return None
  if os.path.isfile(path):
    with open(path, 'rb') as f:
      return f.read()
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      p = os.path.join(root, name)
      with open(p, 'rb') as f:
        out[os.path.relpath(p, path)] = f.read()
  return out


def test_corpus_is_at_least_the_issue_s_91_cases():
  assert len(CASES) >= 91


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input_is_one_line_exit_2(name, tmp_path, capsys):
  case = Case(tmp_path)
  case.existing = False
  case.cleanup = lambda: None
  argv, fragment = CASES[name](case)
  capsys.readouterr()
  before = _snapshot(case.workdir)
  try:
    code = main_lib.main(argv)
  finally:
    case.cleanup()
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert code == 2, (name, err[-3000:])
  assert len(lines) == 1, (name, err[-3000:])
  assert lines[0].startswith('affectjax: error: ') and 'Traceback' not in err
  assert fragment in lines[0], (name, lines[0])
  assert _snapshot(case.workdir) == before, 'the workdir was written'
  # Nor a lock, a half-prepared dataset or an empty folder in the caches, unless the
  # refusal came after valid files were prepared (a config or an encoder refused).
  left = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / 'tfds').rglob('*'))
  if not any(p.endswith('dataset_info.json') for p in left):
    assert not left, (name, left)


def test_source_replaced_under_a_prepared_cache_is_read_again(tmp_path):
  """Same size, same mtime, other labels: the prepared TFDS data is keyed by content."""
  from affectjax import config as config_lib
  from affectjax.data import get_dataset
  case = Case(tmp_path)
  arrays = mosi_arrays()
  path = case.npz(arrays)
  config = config_lib.load(config_path('mosi.py:tfn,smoke'), case.data_overrides())
  first = get_dataset(config).splits['test'].arrays['label']
  stat = os.stat(path)
  arrays['sentiment'] = -arrays['sentiment']
  case.npz(arrays)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert os.path.getsize(path) == stat.st_size
  second = get_dataset(config).splits['test'].arrays['label']
  np.testing.assert_allclose(second, -first, rtol=1e-6)


def test_a_failed_preparation_removes_its_lock_and_a_waiter_locks_afresh(tmp_path):
  """A holds the preparation lock and fails (a refused input); B, waiting on it, must not
  prepare under the removed file (a third process would lock a new one beside it)."""
  import threading
  import types
  from affectjax.data import prepared
  builder = types.SimpleNamespace(name='demo', data_dir=str(tmp_path / 'tfds' / 'demo' / '1.0'))
  lock = tmp_path / 'tfds' / 'demo' / '1.0.lock'
  waiting, seen = threading.Event(), {}

  def b():
    waiting.set()
    with prepared._preparing(builder):
      seen['inode_matches'] = lock.exists()
  with pytest.raises(ValueError, match='refused'):
    with prepared._preparing(builder):
      assert lock.exists()
      other = threading.Thread(target=b)
      other.start()
      waiting.wait()
      time.sleep(0.3)  # B is now blocked in flock on A's file.
      raise ValueError('refused')
  other.join(timeout=10)
  assert seen == {'inode_matches': True}
  # B succeeded: its lock file stays (as after any preparation); A's folders were reused.
  assert lock.exists()
