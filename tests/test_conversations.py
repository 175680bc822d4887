"""ERC corpus readers: real IEMOCAP/MELD/EmoryNLP files and a written IEMOCAP_features.pkl."""

import os
import pickle

import numpy as np
import pytest

from affectjax import errors
from affectjax.data import DataError, conversations, safe_pickle

DATA = os.environ.get('AFFECTJAX_DATA_DIR', '')


def _needs(*parts):
  return pytest.mark.skipif(not os.path.exists(os.path.join(DATA, *parts)),
                            reason=f'real data absent: set AFFECTJAX_DATA_DIR ({"/".join(parts)})')


@_needs('iemocap', 'iemocap_conversations.pkl')
def test_iemocap_standard_split():
  splits = conversations.read_iemocap_conversations(
      os.path.join(DATA, 'iemocap', 'iemocap_conversations.pkl'))
  assert [len(splits[s]) for s in ('train', 'valid', 'test')] == [108, 12, 31]
  utts = {s: sum(len(d['labels']) for d in v) for s, v in splits.items()}
  assert utts['train'] + utts['valid'] == 5810 and utts['test'] == 1623
  assert all(d['id'].startswith('Ses05') for d in splits['test'])
  assert not any(d['id'].startswith('Ses05') for d in splits['train'] + splits['valid'])
  assert {s for d in splits['train'] for s in d['speakers']} == {'M', 'F'}


@_needs('meld', 'train_sent_emo.csv')
def test_meld_official_split():
  splits = conversations.read_meld(os.path.join(DATA, 'meld'))
  assert [len(splits[s]) for s in ('train', 'valid', 'test')] == [1038, 114, 280]
  assert [sum(len(d['labels']) for d in splits[s]) for s in ('train', 'valid', 'test')] == [
      9989, 1109, 2610]
  first = splits['train'][0]
  assert first['speakers'][0] == 'Chandler' and '\u2019' in first['texts'][0]
  assert len(first['sentiments']) == len(first['labels'])
  assert {l for d in splits['test'] for l in d['labels']} == set(range(7))


@_needs('emorynlp', 'emorynlp_train_final.csv')
def test_emorynlp_scenes():
  splits = conversations.read_emorynlp(os.path.join(DATA, 'emorynlp'))
  assert len(splits['train']) == 659
  assert sum(len(d['labels']) for d in splits['train']) == 7551
  assert splits['train'][0]['speakers'][0] == 'Monica Geller'


def _features_pickle(path, bad_label=False):
  rng = np.random.default_rng(0)
  ids = [f'Ses0{i // 4 + 1}_dlg{i}' for i in range(13)]
  n = {v: 3 + i % 5 for i, v in enumerate(ids)}
  data = (
      ids,
      {v: [[1, 0] if j % 2 else [0, 1] for j in range(n[v])] for v in ids},
      {v: [int(x) for x in rng.integers(0, 6, n[v])] for v in ids},
      {v: rng.normal(size=(n[v], 11)).astype(np.float32) for v in ids},
      {v: rng.normal(size=(n[v], 7)).astype(np.float32) for v in ids},
      {v: rng.normal(size=(n[v], 5)).astype(np.float32) for v in ids},
      {v: [f'utterance {j}' for j in range(n[v])] for v in ids},
      ids[:10], ids[10:],
  )
  if bad_label:
    data[2][ids[3]][1] = 6
  with open(path, 'wb') as f:
    pickle.dump(data, f)
  return data


def test_iemocap_features_layout(tmp_path):
  data = _features_pickle(tmp_path / 'IEMOCAP_features.pkl')
  splits = conversations.read_iemocap_features(str(tmp_path / 'IEMOCAP_features.pkl'))
  assert [len(splits[s]) for s in ('train', 'valid', 'test')] == [9, 1, 3]
  assert {d['id'] for d in splits['test']} == set(data[0][10:])
  d = splits['test'][0]
  np.testing.assert_array_equal(d['audio'], data[4][d['id']])
  assert d['speakers'][:2] == ['1', '0'] and d['labels'] == data[2][d['id']]


def test_iemocap_features_bad_label_and_malicious(tmp_path):
  _features_pickle(tmp_path / 'bad.pkl', bad_label=True)
  with pytest.raises(DataError, match=r"bad.pkl: dialogue 'Ses01_dlg3': field 'labels' has 6"):
    conversations.read_iemocap_features(str(tmp_path / 'bad.pkl'))

  class Evil:
    def __reduce__(self):
      return (os.system, ('true',))

  with open(tmp_path / 'evil.pkl', 'wb') as f:
    pickle.dump([Evil()], f)
  with pytest.raises(errors.UnsafePickleError, match='evil.pkl: refusing'):
    conversations.read_iemocap_conversations(str(tmp_path / 'evil.pkl'))
  with pytest.raises(FileNotFoundError, match='declare-lab/MELD'):
    conversations.read_meld(str(tmp_path))


@pytest.mark.parametrize('protocol', [0, 1, 2, 4, 5])
def test_python3_pickles_of_arrays_load_and_codec_tricks_are_refused(tmp_path, protocol):
  # Protocols 0-2 write array bytes as latin-1 text rebuilt through _codecs.encode.
  data = {'a': np.arange(5, dtype=np.float32), 'b': [np.eye(2)], 'c': np.int64(3)}
  with open(tmp_path / 'ok.pkl', 'wb') as f:
    pickle.dump(data, f, protocol=protocol)
  out = safe_pickle.load(str(tmp_path / 'ok.pkl'))
  np.testing.assert_array_equal(out['a'], data['a'])
  np.testing.assert_array_equal(out['b'][0], np.eye(2))
  assert out['c'] == 3 and isinstance(out['c'], np.int64)

  class Bomb:  # _codecs.encode with another codec (a zlib bomb, base64, ...): refused.
    def __reduce__(self):
      import _codecs
      return (_codecs.encode, (b'x' * 10, 'zlib'))

  with open(tmp_path / 'bomb.pkl', 'wb') as f:
    pickle.dump([Bomb()], f, protocol=protocol)
  with pytest.raises(errors.UnsafePickleError, match="bomb.pkl: refusing _codecs.encode "
                                                         "with 'zlib'"):
    safe_pickle.load(str(tmp_path / 'bomb.pkl'))


def test_meld_unknown_label_names_file_and_column(tmp_path):
  header = 'Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n'
  for name in ('train', 'dev', 'test'):
    (tmp_path / f'{name}_sent_emo.csv').write_bytes(
        (header + '1,It\x92s fine,Ross,joy,positive,0,0\n').encode('latin1'))
  splits = conversations.read_meld(str(tmp_path))  # cp1252 fallback: \x92 is a quote
  assert splits['test'][0]['texts'] == ['It\u2019s fine']
  (tmp_path / 'dev_sent_emo.csv').write_text(header + '1,Hi,Ross,glee,positive,0,0\n')
  with pytest.raises(DataError, match=r"dev_sent_emo.csv: dialogue '0': column 'Emotion' "
                                      r"has unknown label 'glee'"):
    conversations.read_meld(str(tmp_path))
