"""CMU-MOSI / MOSEI builders: the Poria npz (real data) and MMSA pickles (written here)."""

import json
import os
import pickle

import numpy as np
import pytest

from affectjax import config as config_lib
from affectjax import main as main_lib
from affectjax import errors
from affectjax.data import DataError, get_dataset, mosi
from conftest import config_path, load_script

DATA = os.environ.get('AFFECTJAX_DATA_DIR', '')
needs_mosi = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DATA, 'mosi', 'mosi_utterances.npz')),
    reason='real data absent: set AFFECTJAX_DATA_DIR to the folder holding mosi/')


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _config(name, tfds_dir, overrides=()):
  return config_lib.load(config_path(name), [f'data.tfds_dir={tfds_dir}', *overrides])


@needs_mosi
def test_poria_split_keeps_test_videos_apart():
  splits = mosi.read_poria_npz(os.path.join(DATA, 'mosi', 'mosi_utterances.npz'))
  videos = {k: set(v['video_id']) for k, v in splits.items()}
  assert len(videos['test']) == 31 and len(splits['test']['label']) == 752
  assert len(videos['valid']) == mosi.VALID_VIDEOS
  assert len(videos['train']) == 62 - mosi.VALID_VIDEOS
  assert len(splits['train']['label']) + len(splits['valid']['label']) == 1447
  assert not (videos['valid'] & videos['test']) and not (videos['train'] & videos['valid'])
  again = mosi.read_poria_npz(os.path.join(DATA, 'mosi', 'mosi_utterances.npz'))
  assert set(again['valid']['video_id']) == videos['valid']


@needs_mosi
def test_tfds_builder_utterance_and_contextual(tfds_dir):
  utt = get_dataset(_config('mosi.py:tfn', tfds_dir))
  train = utt.splits['train'].arrays
  assert train['text'].shape[1:] == (100,) and train['audio'].shape[1:] == (73,)
  assert train['vision'].shape[1:] == (100,)
  assert len(utt.splits['test']) == 752
  raw = mosi.read_poria_npz(os.path.join(DATA, 'mosi', 'mosi_utterances.npz'))['test']
  order = np.lexsort((raw['segment'], raw['video_id']))
  np.testing.assert_array_equal(utt.splits['test'].arrays['text'], raw['text'][order])

  ctx = get_dataset(_config('mosi.py:tfn,contextual', tfds_dir))
  test = ctx.splits['test'].arrays
  assert test['text'].shape[0] == 31 and test['text'].shape[2] == 100
  assert test['label_mask'].sum() == 752
  # Real utterances first, in segment order; padding is zero.
  first = raw['video_id'][order][0]
  n_first = int((raw['video_id'] == first).sum())
  np.testing.assert_array_equal(test['label'][0, :n_first], raw['label'][order][:n_first])
  assert (test['text'][test['label_mask'] == 0] == 0).all()


def _mmsa(rng, n, t=11, dims=(13, 5, 7), lengths=False, nan=False):
  d = {
      'text': rng.normal(size=(n, t, dims[0])).astype(np.float32),
      'audio': rng.normal(size=(n, t, dims[1])).astype(np.float32),
      'vision': rng.normal(size=(n, t, dims[2])).astype(np.float32),
      'regression_labels': rng.uniform(-3, 3, size=n).astype(np.float32),
      'id': np.array([f'vid{i // 3}$_${i % 3 + 1}' for i in range(n)], dtype=object),
  }
  if lengths:
    d['audio_lengths'] = rng.integers(1, t + 1, n)
    d['vision_lengths'] = rng.integers(1, t + 1, n)
  if nan:
    d['vision'][2, 3, 1] = np.nan
  return d


def _write_mmsa(tmp_path, name, **kw):
  rng = np.random.default_rng(0)
  data = {'train': _mmsa(rng, 17, **kw), 'valid': _mmsa(rng, 7, **kw),
          'test': _mmsa(rng, 8, **kw)}
  with open(tmp_path / name, 'wb') as f:
    pickle.dump(data, f)
  return data


@pytest.mark.parametrize('lengths', [False, True])
def test_mmsa_pickle_roundtrip(tmp_path, tfds_dir, lengths):
  written = _write_mmsa(tmp_path, 'aligned_50.pkl', lengths=lengths)
  c = _config('mosi.py:tfn', tfds_dir, [f'data.dir={tmp_path}', 'data.source=mmsa',
                                       'data.file=aligned_50.pkl'])
  ds = get_dataset(c)
  test = ds.splits['test'].arrays
  assert test['text'].shape == (8, 11, 13) and test['vision'].shape == (8, 11, 7)
  ids = written['test']['id'].astype(str)
  order = np.lexsort(([int(i.split('$_$')[1]) for i in ids], [i.split('$_$')[0] for i in ids]))
  np.testing.assert_array_equal(test['audio'], written['test']['audio'][order])
  np.testing.assert_allclose(test['label'], written['test']['regression_labels'][order])
  if lengths:
    np.testing.assert_array_equal(test['vision_lengths'],
                                  written['test']['vision_lengths'][order])
  else:
    assert (test['vision_lengths'] == 11).all()


def test_mmsa_nan_features_named(tmp_path, tfds_dir):
  _write_mmsa(tmp_path, 'bad.pkl', nan=True)
  c = _config('mosi.py:tfn', tfds_dir, [f'data.dir={tmp_path}', 'data.source=mmsa',
                                       'data.file=bad.pkl'])
  with pytest.raises(DataError, match=r":train: field 'vision' has 1 NaN/inf values "
                                      r"\(first in example"):
    get_dataset(c)


class _Evil:

  def __reduce__(self):
    return (os.system, ('touch pwned',))


def test_malicious_pickle_is_refused(tmp_path):
  path = tmp_path / 'evil.pkl'
  with open(path, 'wb') as f:
    pickle.dump({'train': {'text': _Evil()}}, f)
  with pytest.raises(errors.UnsafePickleError, match=f'{path}: refusing .*system'):
    mosi.read_mmsa_pickle(str(path))
  assert not (tmp_path / 'pwned').exists() and not os.path.exists('pwned')


def test_corrupt_and_missing_files(tmp_path):
  _write_mmsa(tmp_path, 'ok.pkl')
  (tmp_path / 'cut.pkl').write_bytes((tmp_path / 'ok.pkl').read_bytes()[:200])
  with pytest.raises(ValueError, match=r'cut.pkl: corrupt .*thuiar/MMSA'):
    mosi.read_mmsa_pickle(str(tmp_path / 'cut.pkl'))
  with pytest.raises(FileNotFoundError, match=r'nope.pkl: not found .*thuiar/MMSA'):
    mosi.read_mmsa_pickle(str(tmp_path / 'nope.pkl'))
  with pytest.raises(FileNotFoundError, match='SenticNet'):
    mosi.read_poria_npz(str(tmp_path / 'mosi_utterances.npz'))
  with open(tmp_path / 'list.pkl', 'wb') as f:
    pickle.dump([1, 2], f)
  with pytest.raises(DataError, match='top level is list'):
    mosi.read_mmsa_pickle(str(tmp_path / 'list.pkl'))


def test_cli_trains_tfn_with_lstm_text_on_mmsa_pickle(tmp_path, tfds_dir, capsys):
  _write_mmsa(tmp_path, 'unaligned.pkl', lengths=True)
  workdir = tmp_path / 'run'
  code = main_lib.main([
      'train', '--config', config_path('mosi.py:tfn,smoke'), '--workdir', str(workdir),
      f'--config.data.dir={tmp_path}', '--config.data.source=mmsa',
      '--config.data.file=unaligned.pkl', f'--config.data.tfds_dir={tfds_dir}',
      '--config.model.lstm_out={"text": 8}', '--config.train.batch_size=8',
      '--config.train.eval_batch_size=8'])
  assert code == 0, capsys.readouterr().err
  results = json.loads((workdir / 'results.json').read_text())
  assert {'acc2', 'f1', 'acc2_has0', 'acc7', 'mae', 'corr'} <= set(results['test'])


def test_validation_probe_ridge_scores_signal_noise_and_skips_neutral():
  probe = load_script('mosi', 'validation_probe.py')
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 7))
  y = x @ rng.normal(size=7)
  assert probe.ridge_acc2(x[:300], y[:300], x[300:], y[300:], 1.0) > 0.95
  noise = rng.normal(size=(400, 7))
  assert 0.3 < probe.ridge_acc2(noise[:300], y[:300], noise[300:], y[300:], 1.0) < 0.7
  # Neutral (0) validation labels are left out of Acc-2 non-0, whatever is predicted.
  y_valid = y[300:].copy()
  y_valid[:40] = 0
  assert probe.ridge_acc2(x[:300], y[:300], x[300:], y_valid, 1.0) == pytest.approx(
      probe.ridge_acc2(x[:300], y[:300], x[340:], y[340:], 1.0))
