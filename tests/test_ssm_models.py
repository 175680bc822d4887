"""State-space models: contextual MOSI models, speech emotion recognition on RAVDESS-layout
audio (log-mel in the pipeline, actor folds, EmoDB), TPU compiles and CLI runs."""

import json
import os

import jax
import numpy as np
import pytest

from affectjax import config as config_lib
from affectjax import main as main_lib
from affectjax import sharding
from affectjax import experiment
from affectjax.data import DataError, audio, get_dataset, ravdess
from conftest import config_path, train_losses

DATA = os.environ.get('AFFECTJAX_DATA_DIR', '')
needs_data = pytest.mark.skipif(
    not os.path.isdir(os.path.join(DATA, 'mosi')),
    reason='real data absent: set AFFECTJAX_DATA_DIR to ../shared/data')
needs_libtpu = pytest.mark.skipif(
    __import__('importlib').util.find_spec('libtpu') is None,
    reason="libtpu is not installed (pip install -e '.[tpu]')")


def write_ravdess(directory, seconds=0.6, seed=0):
  """A RAVDESS-layout folder of FLAC tones (pitch set by the emotion) for all 24 actors,
  two clips per actor, plus actor_folds.json; and an EmoDB-layout folder of WAVs."""
  import soundfile
  rng = np.random.default_rng(seed)
  root = os.path.join(directory, 'ravdess')
  t = np.arange(int(16000 * seconds)) / 16000
  for actor in range(1, 25):
    os.makedirs(os.path.join(root, 'speech_16k', f'Actor_{actor:02d}'), exist_ok=True)
    for rep in (1, 2):
      emotion = 1 + (actor + rep) % 8
      x = 0.3 * np.sin(2 * np.pi * 150 * emotion * t) + 0.01 * rng.normal(size=t.shape)
      x = np.concatenate([np.zeros(1600), x, np.zeros(800)])  # Silence to trim.
      name = f'03-01-{emotion:02d}-01-01-{rep:02d}-{actor:02d}.flac'
      soundfile.write(os.path.join(root, 'speech_16k', f'Actor_{actor:02d}', name), x, 16000)
  folds = {f'split0{k}': list(range(4 * k - 3, 4 * k + 1)) for k in range(1, 7)}
  with open(os.path.join(root, 'actor_folds.json'), 'w') as f:
    json.dump({'test_actors_per_fold': folds}, f)
  emodb = os.path.join(directory, 'emodb', 'wav')
  os.makedirs(emodb, exist_ok=True)
  t22 = np.arange(int(22050 * seconds)) / 22050
  for i, letter in enumerate('WLEAFTN'):
    x = (0.3 * np.sin(2 * np.pi * 440 * t22) * 32767).astype(np.int16)
    soundfile.write(os.path.join(emodb, f'03a0{i}{letter}a.wav'), x, 22050)
  return root


@pytest.fixture
def tiny_ravdess(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))  # A fresh decoded-audio cache.
  write_ravdess(tmp_path / 'data')
  return [f'data.dir={tmp_path / "data"}', 'train.batch_size=8', 'train.eval_batch_size=8',
          'model.width=16', 'model.num_layers=1']


def test_log_mel_frames_masks_and_filterbank():
  fb = audio.mel_filterbank(16000, 400, 64)
  assert fb.shape == (201, 64) and (fb >= 0).all() and (fb.max(axis=0) > 0.25).all()
  peaks = fb.argmax(axis=0)
  assert np.all(np.diff(peaks) >= 0)  # Bands rise in frequency.
  t = np.arange(16000) / 16000
  waves = np.zeros((2, 16000), np.float32)
  waves[0] = np.sin(2 * np.pi * 1000 * t)
  waves[1, :8000] = np.sin(2 * np.pi * 300 * t[:8000])
  feats, mask = audio.log_mel(waves, np.array([16000, 8000]))
  assert feats.shape == (2, 98, 64)
  # 1 + (len - 400) // 160 real frames.
  np.testing.assert_array_equal(mask.sum(1), [98, 48])
  assert np.all(feats[1, 48:] == 0)
  # The loudest band is the one whose filter peaks nearest each tone.
  raw, _ = audio.log_mel(waves, np.array([16000, 8000]), normalize=False)
  for i, hz in ((0, 1000), (1, 300)):
    band = np.argmax(raw[i, :int(mask[i].sum())].mean(0))
    assert abs(peaks[band] * 40 - hz) <= 80
  # Normalised per clip over real frames.
  np.testing.assert_allclose(feats[1, :48].mean(0), 0, atol=1e-2)


def test_per_speaker_and_training_set_normalisation(tiny_ravdess):
  """`data.audio_norm=speaker`: every actor's real frames have zero mean and unit variance
  per band over all that actor's clips (not per clip), whichever split holds them;
  `train`: the training actors' statistics everywhere."""
  config = config_lib.load(config_path('ravdess_speech.py:ssm') + ',fold3',
                           tiny_ravdess + ['data.audio_norm=speaker'])
  clip = get_dataset(config_lib.load(config_path('ravdess_speech.py:ssm') + ',fold3', tiny_ravdess))
  dataset = get_dataset(config)
  for name, source in dataset.splits.items():
    batch = source.get_batch(np.arange(len(source)))
    mask = batch['frame_mask'] > 0
    for first in range(0, len(source), 2):  # write_ravdess: two clips per actor, in order.
      rows = slice(first, first + 2)
      frames = batch['audio'][rows][mask[rows]]
      np.testing.assert_allclose(frames.mean(0), 0, atol=1e-3)
      np.testing.assert_allclose(frames.std(0), 1, atol=1e-2)
      # Each clip keeps its level relative to the speaker's other clip.
      assert np.abs(batch['audio'][first][mask[first]].mean(0)).max() > 0.05
    other = clip.splits[name].get_batch(np.arange(len(source)))
    np.testing.assert_array_equal(other['frame_mask'], batch['frame_mask'])
    assert not np.allclose(other['audio'], batch['audio'], atol=1e-3)
  # `train`: the training actors' statistics, for every split: pooled training frames are
  # standardised, test clips use the same shift and scale (so they are not).
  config = config_lib.load(config_path('ravdess_speech.py:ssm') + ',fold3',
                           tiny_ravdess + ['data.audio_norm=train'])
  pooled = get_dataset(config)
  train_batch = pooled.splits['train'].get_batch(np.arange(36))
  frames = train_batch['audio'][train_batch['frame_mask'] > 0]
  np.testing.assert_allclose(frames.mean(0), 0, atol=1e-3)
  np.testing.assert_allclose(frames.std(0), 1, atol=1e-2)
  np.testing.assert_array_equal(pooled.splits['test'].arrays['norm_mean'][0],
                                pooled.splits['train'].arrays['norm_mean'][0])
  emodb = ravdess.emodb_source(config)
  np.testing.assert_allclose(emodb.arrays['norm_std'][0],
                             pooled.splits['train'].arrays['norm_std'][0])
  # EmoDB (all 7 clips from speaker 03 here): added unlabelled to training, or scored.
  config = config_lib.load(config_path('ravdess_speech.py:ssm') + ',fold3', tiny_ravdess + [
      'data.audio_norm=speaker', "data.unlabelled=('emodb',)"])
  train_split = get_dataset(config).splits['train']
  for source, rows in ((train_split, slice(36, 43)), (ravdess.emodb_source(config), slice(None))):
    batch = source.get_batch(np.arange(len(source)))
    frames = batch['audio'][rows][batch['frame_mask'][rows] > 0]
    np.testing.assert_allclose(frames.mean(0), 0, atol=1e-3)
  assert len(train_split) == 43 and (train_split.arrays['label'][36:] == -1).all()
  with pytest.raises(DataError, match="config.data.audio_norm: 'global'"):
    get_dataset(config_lib.load(config_path('ravdess_speech.py:ssm') + ',fold3',
                                tiny_ravdess + ['data.audio_norm=global']))


def test_trim_silence_and_resampling(tmp_path):
  import soundfile
  x = np.concatenate([np.zeros(8000), 0.5 * np.ones(4000), np.zeros(8000)]).astype(np.float32)
  trimmed = audio.trim_silence(x)
  assert 4000 <= len(trimmed) <= 4000 + 2 * 400
  path = str(tmp_path / 'a.wav')
  soundfile.write(path, np.zeros(22050, np.float32), 22050)
  assert len(audio.read_audio(path)) == 16000


def test_folds_are_speaker_independent(tiny_ravdess):
  config = config_lib.load(config_path('ravdess_speech.py:ssm') + ',fold3', tiny_ravdess)
  dataset = get_dataset(config)
  assert {k: len(v) for k, v in dataset.splits.items()} == {'train': 36, 'valid': 4, 'test': 8}
  root = os.path.join(tiny_ravdess[0].split('=', 1)[1], 'ravdess')
  split = ravdess.fold_actors(ravdess.read_folds(os.path.join(root, 'actor_folds.json')), 3)
  assert split['test'] == [9, 10, 11, 12] and split['valid'] == [13, 14]
  assert not set(split['train']) & (set(split['test']) | set(split['valid']))
  assert len(split['train']) == 18
  batch = dataset.splits['test'].get_batch(np.arange(8))
  assert batch['audio'].shape[1:] == (199, 64) and batch['frame_mask'].sum(1).min() > 20
  emodb = ravdess.emodb_source(config)  # Boredom (L) is dropped; labels are RAVDESS indices.
  assert sorted(emodb.arrays['label']) == sorted(ravdess.EMODB_TO_RAVDESS.values())


def test_bad_audio_inputs_are_one_line_errors(tiny_ravdess, tmp_path):
  root = tmp_path / 'data' / 'ravdess'
  bad = root / 'speech_16k' / 'Actor_01' / '03-01-01-01-01-03-01.flac'
  bad.write_bytes(b'not a flac file')
  config = config_lib.load(config_path('ravdess_speech.py:ssm'), tiny_ravdess)
  with pytest.raises(DataError, match=r'03-01-01-01-01-03-01\.flac: cannot decode audio'):
    get_dataset(config)
  bad.unlink()
  (root / 'speech_16k' / 'Actor_01' / '03-01-09-01-01-01-01.flac').write_bytes(b'')
  with pytest.raises(DataError, match=r'03-01-09-01-01-01-01\.flac: field emotion'):
    get_dataset(config)
  (root / 'speech_16k' / 'Actor_01' / '03-01-09-01-01-01-01.flac').unlink()
  config = config_lib.load(config_path('ravdess_speech.py:ssm'), [*tiny_ravdess, 'data.fold=7'])
  with pytest.raises(DataError, match=r'config\.data\.fold: 7'):
    get_dataset(config)
  (root / 'actor_folds.json').write_text('{"folds": 1}')
  with pytest.raises(DataError, match=r'actor_folds\.json: field test_actors_per_fold'):
    get_dataset(config_lib.load(config_path('ravdess_speech.py:ssm'), tiny_ravdess))


@pytest.mark.parametrize('name, overrides', [
    ('ravdess_speech.py:ssm', ['model.ssm=s5']), ('ravdess_speech.py:ssm', ['model.ssm=mamba']),
    ('ravdess_speech.py:transformer', [])])
def test_speech_models_pad_invariant_and_train_from_cli(name, overrides, tiny_ravdess,
                                                        tmp_path, capsys):
  config = config_lib.load(config_path(name), [*tiny_ravdess, *overrides])
  dataset = get_dataset(config)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  exp = experiment.Experiment.for_dataset(config, mesh, dataset)
  params = exp.init_state(0).params
  batch = dataset.splits['train'].get_batch(np.arange(4))
  apply = jax.jit(lambda b: exp.model.apply({'params': params}, b, train=False))
  base = np.asarray(apply(batch))
  noisy = dict(batch, audio=np.where(batch['frame_mask'][..., None] > 0, batch['audio'], 50.0))
  np.testing.assert_allclose(np.asarray(apply(noisy)), base, rtol=1e-4, atol=1e-4)
  workdir = tmp_path / 'run'
  code = main_lib.main(['train', '--config', config_path(name) + ',smoke',
                        '--workdir', str(workdir),
                        *[f'--config.{o}' for o in [*tiny_ravdess, *overrides]]])
  assert code == 0, capsys.readouterr().err
  results = json.loads((workdir / 'results.json').read_text())
  assert set(results['test']['per_class_f1']) == set(ravdess.EMOTIONS)
  assert sum(map(sum, results['test']['confusion'])) == 8


@needs_data
# S5 with SSM fusion is the config's default: its scan runs in the attention-fusion case
# (config ssm s5) and its fusion in the mamba case, so it is an experiment run (66 s).
@pytest.mark.parametrize('name, overrides', [
    ('mosi.py:ssm', ['model.ssm=mamba']),
    pytest.param('mosi.py:ssm', ['model.ssm=s5'], marks=pytest.mark.experiment),
    ('mosi.py:ssm', ['model.fusion=attention']),
    ('mosi.py:bclstm', [])])
def test_contextual_mosi_models_pad_invariant_and_train_from_cli(name, overrides, tmp_path,
                                                                 capsys):
  small = ['model.width=16'] if name == 'mosi.py:ssm' else ['model.hidden=16',
                                                         'model.fusion_hidden=16']
  config = config_lib.load(config_path(name), [*overrides, *small])
  dataset = get_dataset(config)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  exp = experiment.Experiment(config, mesh, dataset.element_spec(), dataset.modalities, None,
                              model_inputs=dataset.model_inputs)
  params = exp.init_state(0).params
  batch = dataset.splits['test'].get_batch(np.arange(5))
  real = batch['label_mask'] > 0
  assert batch['text'].shape[1] % 8 == 0 and not real.all()
  apply = jax.jit(lambda b: exp.model.apply({'params': params}, b, train=False))
  base = np.asarray(apply(batch))
  noisy = {k: v.copy() for k, v in batch.items()}
  for m in ('text', 'audio', 'vision'):
    noisy[m][~real] = 1e3
  np.testing.assert_allclose(np.asarray(apply(noisy))[real], base[real], rtol=1e-4, atol=1e-4)
  # Nor does more padding (8 more utterances per video).
  longer = {k: (np.pad(v, [(0, 0), (0, 8)] + [(0, 0)] * (v.ndim - 2)) if v.ndim > 1 else v)
            for k, v in batch.items()}
  np.testing.assert_allclose(np.asarray(apply(longer))[:, :real.shape[1]][real], base[real],
                             rtol=1e-4, atol=1e-4)
  if overrides and overrides != ['model.ssm=s5']:
    return  # The CLI path is the same for every variant: trained for S5 and bc-LSTM only.
  code = main_lib.main(['train', '--config', config_path(name) + ',smoke',
                        '--workdir', str(tmp_path / 'run'),
                        *[f'--config.{o}' for o in [*overrides, *small]]])
  assert code == 0, capsys.readouterr().err
  results = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert 0.4 <= results['test']['acc2'] <= 1.0


@needs_libtpu
def test_aot_tpu_compile_of_speech_configs(tiny_ravdess):
  from affectjax import compile as compile_lib
  for name, extra in (('ravdess_speech.py:ssm', []), ('ravdess_speech.py:ssm', ['model.ssm=mamba']),
                      ('ravdess_speech.py:transformer', [])):
    config = config_lib.load(config_path(name), [*tiny_ravdess, *extra,
                                                         'mesh.model=2'])
    report = compile_lib.compile_for_topology(config, 'v5e:2x4')
    assert report['num_devices'] == 8 and report['mesh'] == {'data': 4, 'fsdp': 1, 'model': 2}
    assert report['flops_per_step'] > 0


@needs_libtpu
@needs_data
# 45 s (ContextualSSM) and 30 s (BC-LSTM) of TPU compile on 2 cores: long runs, `-m
# experiment`; the S5 and Mamba layers' TPU compile stays in the default suite through
# test_aot_tpu_compile_of_speech_configs.
@pytest.mark.experiment
@pytest.mark.parametrize('name, small', [('mosi.py:ssm', ['model.width=16']),
                                         ('mosi.py:bclstm', ['model.hidden=16'])])
def test_aot_tpu_compile_of_mosi_configs(name, small):
  from affectjax import compile as compile_lib
  report = compile_lib.compile_for_topology(
      config_lib.load(config_path(name), ['mesh.model=2', *small]), 'v5e:2x4')
  assert report['num_devices'] == 8 and report['flops_per_step'] > 0


@needs_data
def test_real_ravdess_folds_and_emodb():
  config = config_lib.load(config_path('ravdess_speech.py:ssm') + ',fold2', [])
  dataset = get_dataset(config)
  assert {k: len(v) for k, v in dataset.splits.items()} == {'train': 1080, 'valid': 120,
                                                            'test': 240}
  labels = dataset.splits['test'].arrays['label']
  assert np.bincount(labels).tolist() == [16, 32, 32, 32, 32, 32, 32, 32]
  emodb = ravdess.emodb_source(config)
  assert len(emodb) == 535 - 81  # All but the 81 boredom clips.
  batch = emodb.get_batch(np.arange(4))
  assert batch['audio'].shape[1:] == (199, 64) and np.isfinite(batch['audio']).all()


def _losses_on_mesh(config, shape, steps=3):
  return train_losses(config, shape, config.train.batch_size, steps)[0]


@pytest.mark.parametrize('overrides', [['model.ssm=s5'], ['model.ssm=mamba']])
def test_speech_ssm_one_device_equals_4x2_mesh(overrides, tiny_ravdess):
  config = config_lib.load(config_path('ravdess_speech.py:ssm'), [*tiny_ravdess, *overrides])
  np.testing.assert_allclose(_losses_on_mesh(config, (1, 1)), _losses_on_mesh(config, (4, 2)),
                             rtol=1e-4, atol=1e-5)


@needs_data
@pytest.mark.parametrize('overrides', [['model.ssm=mamba'],
                                       ['model.ssm=s5', 'model.fusion=attention']])
def test_contextual_ssm_one_device_equals_4x2_mesh(overrides):
  config = config_lib.load(config_path('mosi.py:ssm'),
                           [*overrides, 'model.width=16', 'train.batch_size=8'])
  np.testing.assert_allclose(_losses_on_mesh(config, (1, 1)), _losses_on_mesh(config, (4, 2)),
                             rtol=1e-4, atol=1e-5)
