"""Speech encoders in the one trainer: frozen features cached once, fine-tuning with
parameter groups and layer-wise decay, 1 vs 8 devices, the audio-visual and contrastive
towers, EmoDB folds, predict from files and waveforms. A small synthetic corpus in the
RAVDESS and EmoDB layouts (tones whose pitch follows the emotion) and the small encoders
of tests/data/speech keep every run to seconds."""

import importlib.util
import json
import os
import shutil

import jax
import numpy as np
import pytest

from affectjax import config as config_lib
from affectjax import main as main_lib
from affectjax import optim
from affectjax.data import audio, emodb, encoded, get_dataset
from affectjax.encoders import speech
from conftest import config_path, train_losses

HERE = os.path.join(os.path.dirname(__file__), 'data', 'speech')
WHISPER = os.path.join(HERE, 'whisper_tiny128')
WAVLM = os.path.join(HERE, 'wavlm_base')
RATE = 16000


def _tone(emotion: int, speaker: int, seconds: float, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * RATE)) / RATE
  x = 0.4 * np.sin(2 * np.pi * (140 + 45 * emotion + 3 * speaker) * t)
  x *= np.minimum(1.0, 8 * np.minimum(t, t[-1] - t))  # Fades: nothing to trim.
  return (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  """A data directory with ravdess/speech_16k (24 actors x 8 emotions, 0.5-0.7 s),
  ravdess/actor_folds.json and au_mfcc.npz, and emodb/wav (10 speakers x 7 emotions)."""
  import soundfile
  root = tmp_path_factory.mktemp('speech_corpus')
  clips, features = [], []
  for actor in range(1, 25):
    folder = root / 'ravdess' / 'speech_16k' / f'Actor_{actor:02d}'
    folder.mkdir(parents=True)
    for emotion in range(1, 9):
      name = f'03-01-{emotion:02d}-01-01-01-{actor:02d}'
      x = _tone(emotion, actor, 0.5 + 0.025 * (actor % 9), actor * 10 + emotion)
      soundfile.write(folder / f'{name}.flac', x, RATE)
      clips.append('01' + name[2:])
      au = np.random.default_rng(actor * 100 + emotion).normal(size=294) * 0.1
      au[emotion % 35] += 1.0
      features.append(au)
  folds = {f'split{k + 1}': list(range(4 * k + 1, 4 * k + 5)) for k in range(6)}
  (root / 'ravdess' / 'actor_folds.json').write_text(json.dumps(
      {'test_actors_per_fold': folds}))
  np.savez(root / 'ravdess' / 'au_mfcc.npz', clip=np.asarray(clips),
           features=np.asarray(features, np.float32))
  wav = root / 'emodb' / 'wav'
  wav.mkdir(parents=True)
  for s, speaker in enumerate(('03', '08', '09', '10', '11', '12', '13', '14', '15', '16')):
    for e, letter in enumerate('NFTWAEL'):
      for take in (1, 2):  # Odd speakers at 22.05 kHz, as the real copies: resampled.
        rate = 22050 if s % 2 else RATE
        x = _tone(e, s, 0.6 * rate / RATE, s * 50 + e * 2 + take)
        soundfile.write(wav / f'{speaker}a0{take}{letter}a.wav', x, rate)
  return str(root)


@pytest.fixture
def home(tmp_path, monkeypatch):
  """A fresh cache (decoded audio and encoder features) per test."""
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  return tmp_path / 'home'


def _overrides(corpus, encoder=WHISPER, seconds=0.6):
  return [f'--config.data.dir={corpus}', f'--config.data.encoder={encoder}',
          f'--config.data.max_seconds={seconds}']


def test_frozen_features_cached_once_trained_and_predicted(corpus, home, tmp_path, capsys,
                                                           monkeypatch):
  """`affectjax train` on the RAVDESS speech-encoder config encodes the corpus once into
  the feature cache (a progress line says so), trains the head, and predicts from a
  WAV file, a waveform array and an MP3; a second run reads the cache; silence is one
  line with exit 2."""
  workdir = str(tmp_path / 'frozen')
  code = main_lib.main(['train', '--config', config_path('ravdess_whisper.py:fold1,smoke'),
                        '--workdir', workdir, *_overrides(corpus)])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  assert 'through whisper_tiny128 once (features cached in' in captured.err
  assert 'done, 192/192 clips' in captured.err
  cached = os.listdir(home / '.cache' / 'affectjax' / 'features')
  assert len(cached) == 1 and cached[0].startswith('whisper_tiny128_')
  results = json.loads(open(os.path.join(workdir, 'results.json')).read())
  assert 0 <= results['test']['uar'] <= 1
  # A second load reads the cache: encoding again would fail here.
  monkeypatch.setattr(speech, 'frozen_features', lambda *a, **k: 1 / 0)
  config = config_lib.load(config_path('ravdess_whisper.py:fold1,smoke'),
                           [o[len('--config.'):] for o in _overrides(corpus)])
  data = get_dataset(config)
  assert data.splits['train'].element_spec()['audio'][0] == (3, 8, 32)  # (layers, T, D)
  monkeypatch.undo()
  monkeypatch.setenv('HOME', str(home))
  clip = os.path.join(corpus, 'ravdess', 'speech_16k', 'Actor_02', '03-01-05-01-01-01-02.flac')
  out = tmp_path / 'predictions.csv'
  assert main_lib.main(['predict', '--workdir', workdir, clip, '--out', str(out)]) == 0
  rows = out.read_text().splitlines()
  assert rows[0].startswith('id,label,p_neutral') and len(rows) == 2
  from affectjax import inference
  run = inference.load_run(workdir)
  x = audio.read_audio(clip)
  by_array = run.predict(x, sample_rate=RATE)[0]['probabilities']
  by_file = run.predict([clip])[0]['probabilities']
  for k in by_file:
    assert abs(by_array[k] - by_file[k]) < 1e-4
  import soundfile
  mp3 = tmp_path / 'clip.mp3'
  try:
    soundfile.write(mp3, x, RATE, format='MP3')
  except Exception:  # libsndfile built without MP3: write it with PyAV instead.
    mp3 = None
  if mp3 is not None:  # Decoded by PyAV (FFmpeg), resampled like the rest.
    assert run.predict([str(mp3)])[0]['label'] in run.class_names
  silent = tmp_path / 'silent.wav'
  soundfile.write(silent, np.zeros(RATE, np.float32), RATE)
  capsys.readouterr()
  assert main_lib.main(['predict', '--workdir', workdir, str(silent)]) == 2
  err = capsys.readouterr().err.strip()
  assert err == f'affectjax: error: {silent}: field audio is silent (peak below -80 dBFS)'


def test_feature_cache_is_keyed_by_audio_content(corpus, home, tmp_path, monkeypatch):
  """A FLAC rewritten with other samples, the same size and the same modification time
  gives a new cache entry (decoded audio and features), not the old features."""
  import soundfile
  data = tmp_path / 'data'
  shutil.copytree(corpus, data)
  flac = data / 'ravdess' / 'speech_16k' / 'Actor_01' / '03-01-01-01-01-01-01.flac'
  x, _ = soundfile.read(flac, dtype='float32')
  path = flac.with_suffix('.wav')  # 16-bit PCM: the same length is the same size.
  soundfile.write(path, x, RATE, subtype='PCM_16')
  flac.unlink()
  config = config_lib.load(config_path('ravdess_whisper.py:fold1,smoke'),
                           [o[len('--config.'):] for o in _overrides(str(data))])
  calls = []
  real = speech.frozen_features
  monkeypatch.setattr(speech, 'frozen_features', lambda *a, **k: calls.append(1) or real(*a, **k))
  first = get_dataset(config).splits['test'].arrays['audio'].copy()
  get_dataset(config)
  assert len(calls) == 1
  stat, size = os.stat(path), os.path.getsize(path)
  soundfile.write(path, x[::-1].copy(), RATE, subtype='PCM_16')  # Other samples.
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert os.path.getsize(path) == size
  second = get_dataset(config).splits['test'].arrays['audio']
  assert len(calls) == 2 and len(os.listdir(home / '.cache' / 'affectjax' / 'features')) == 2
  assert not np.array_equal(first, second)


@pytest.mark.parametrize('encoder', [WHISPER, WAVLM], ids=['whisper', 'wavlm'])
def test_finetune_step_equal_on_1_and_8_devices(corpus, home, encoder):
  """Fine-tuning (the encoder in the model, loaded from its folder, parameter groups and
  layer-wise decay; WavLM with time masking from the dropout stream): three steps on one
  device and on a 4 x 2 data x model mesh give the same losses and parameters."""
  overrides = [o[len('--config.'):] for o in _overrides(corpus, encoder)]
  config = config_lib.load(config_path('ravdess_whisper.py:fold1,smoke,finetune'),
                           overrides + ['model.towers.audio.mask_time_prob=0.2'])
  one, state_one = train_losses(config, (1, 1), 8, 3)
  many, state_many = train_losses(config, (4, 2), 8, 3)
  np.testing.assert_allclose(one, many, rtol=2e-5)
  for a, b in zip(jax.tree.leaves(state_one.params), jax.tree.leaves(state_many.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
  assert np.all(np.isfinite(one)) and one[0] > 0


def test_finetune_starts_from_the_folder_and_layers_decay(corpus, home):
  """The encoder subtree starts as the folder's weights (config.init.hf); its blocks'
  rates follow decay^(L - i), the stem decay^(L + 1), the final norm and the head 1."""
  from affectjax import sharding
  from affectjax import experiment
  overrides = [o[len('--config.'):] for o in _overrides(corpus, WHISPER)]
  config = config_lib.load(config_path('ravdess_whisper.py:fold1,smoke,finetune'), overrides)
  dataset = get_dataset(config)
  assert dataset.model_inputs['speech_encoder'] == WHISPER
  exp = experiment.Experiment.for_dataset(config, sharding.make_mesh(config.mesh), dataset)
  params = exp.init_state(0).params
  encoder = params['towers']['audio']['speech']['encoder']
  want = speech.resolve(WHISPER).params()
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(want)[0],
                          jax.tree.leaves(encoder)):
    np.testing.assert_array_equal(np.asarray(b), a, err_msg=jax.tree_util.keystr(path))
  scales = optim.layer_scales(params, 'towers/audio/speech/encoder', 0.8)
  prefix = 'towers/audio/speech/encoder/'
  assert scales[prefix + 'layer_1/mlp_in/kernel'] == pytest.approx(0.8)
  assert scales[prefix + 'layer_0/query/kernel'] == pytest.approx(0.8 ** 2)
  assert scales[prefix + 'conv1/kernel'] == pytest.approx(0.8 ** 3)
  assert scales[prefix + 'norm_out/scale'] == 1.0
  assert not any(k.startswith('head') for k in scales)


def test_layer_decay_scales_the_updates():
  """One SGD step with layer decay 0.5 equals the plain step times each path's scale, on
  top of a group's own scale."""
  import ml_collections
  import jax.numpy as jnp
  params = {'enc': {'conv': jnp.ones(3), 'layer_0': {'w': jnp.ones(3)},
                    'layer_1': {'w': jnp.ones(3)}, 'norm_out': jnp.ones(3)},
            'head': jnp.ones(3)}
  grads = jax.tree.map(lambda x: 2 * x, params)

  def step(**optim_fields):
    c = config_lib.base_config()
    with c.unlocked():
      c.optim.name, c.optim.schedule, c.optim.grad_clip = 'sgd', 'constant', 0.0
      c.optim.update(optim_fields)
    tx = optim.make_optimizer(c, params)
    return tx.update(grads, tx.init(params), params)[0]
  plain = step()
  decayed = step(layer_decay=0.5, layer_decay_prefix='enc', groups=(('enc/.*', 0.1),))
  for path, scale in (('conv', 0.1 * 0.125), ('norm_out', 0.1)):
    np.testing.assert_allclose(decayed['enc'][path], plain['enc'][path] * scale, rtol=1e-6)
  np.testing.assert_allclose(decayed['enc']['layer_0']['w'], plain['enc']['layer_0']['w'] *
                             0.1 * 0.25, rtol=1e-6)
  np.testing.assert_allclose(decayed['head'], plain['head'], rtol=1e-6)
  with pytest.raises(config_lib.ConfigError, match='layer_decay_prefix'):
    step(layer_decay=0.5, layer_decay_prefix='nothing')
  with pytest.raises(config_lib.ConfigError, match='layer_decay: must be in'):
    step(layer_decay=1.5, layer_decay_prefix='enc')
  del ml_collections


def test_speech_and_action_units_and_contrastive_towers(corpus, home, tmp_path, capsys):
  """The encoder as the audio tower beside the action units (the fusion classifier) and
  in contrastive pretraining, which the classifier then fine-tunes from."""
  base = _overrides(corpus)
  assert main_lib.main(['train', '--config', config_path('ravdess_whisper.py:fold2,smoke,av'),
                        '--workdir', str(tmp_path / 'av'), *base]) == 0
  pre = str(tmp_path / 'pre')
  assert main_lib.main(['train', '--config',
                        config_path('ravdess_contrastive.py:fold2,smoke,whisper'),
                        '--workdir', pre, *base, '--config.train.batch_size=16',
                        '--config.train.eval_batch_size=32']) == 0, capsys.readouterr().err
  assert main_lib.main(['train', '--config',
                        config_path('ravdess_av_classifier.py:fold2,smoke,whisper,finetune'),
                        '--workdir', str(tmp_path / 'ft'), *base, f'--config.init.workdir={pre}',
                        '--config.train.batch_size=16',
                        '--config.train.eval_batch_size=32']) == 0, capsys.readouterr().err


def test_emodb_folds_leave_one_speaker_out(corpus, home, tmp_path):
  """Ten folds, each testing one speaker and validating on the next; seven classes; the
  encoder config trains on one fold."""
  _, files, labels, speakers = emodb.read_files(config_lib.load(
      config_path('emodb_whisper.py:fold1'), [f'data.dir={corpus}']))
  assert len(files) == 140 and sorted(set(labels)) == list(range(7))
  seen = set()
  for fold in range(1, 11):
    split = emodb.fold_speakers(speakers, fold)
    assert not set(split['test']) & set(split['valid'])
    assert sorted(split['train'] + split['valid'] + split['test']) == sorted(set(speakers))
    seen |= set(split['test'])
  assert seen == set(speakers)
  with pytest.raises(emodb.base.DataError, match='config.data.fold: 11 is not in 1..10'):
    emodb.fold_speakers(speakers, 11)
  assert main_lib.main(['train', '--config', config_path('emodb_whisper.py:fold3,smoke'),
                        '--workdir', str(tmp_path / 'e3'), *_overrides(corpus)]) == 0


def test_speaker_normalisation_and_bad_settings(corpus, home, tmp_path):
  """Per-speaker normalisation standardises each speaker's features over its frames;
  bad encoder settings are one-line errors naming the field."""
  overrides = [o[len('--config.'):] for o in _overrides(corpus)]
  config = config_lib.load(config_path('ravdess_whisper.py:fold1,smoke,speaker'), overrides)
  test = get_dataset(config).splits['test'].arrays
  x = test['audio'].astype(np.float64)
  w = test['frame_mask'][:, None, :, None]
  mean = (x * w).sum((0, 2)) / w.sum((0, 2))
  var = ((x - mean[None, :, None]) ** 2 * w).sum((0, 2)) / w.sum((0, 2))
  # The four test actors, each centred and scaled on its own frames (dimensions that barely
  # vary within a speaker stay below 1: the variance floor).
  assert np.abs(mean).max() < 0.02 and var.max() < 1.01 and np.median(var) > 0.95
  for field, value, message in (
      ('encoder_mode', 'unfrozen', 'config.data.encoder_mode'),
      ('encoder_pool', 0, 'config.data.encoder_pool'),
      ('encoder_pad_seconds', 30.0, 'config.data.encoder_pad_seconds'),
      ('encoder', str(tmp_path), 'config.json: not found')):
    bad = config_lib.load(config_path('ravdess_whisper.py:fold1,smoke'),
                          [f'data.dir={corpus}', f'data.encoder={WAVLM}',
                           f'data.{field}={value}'])
    with pytest.raises(encoded.base.DataError, match=message):
      get_dataset(bad)


@pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                    reason="libtpu is not installed (pip install -e '.[tpu]')")
def test_finetune_step_compiles_for_v5e_8(corpus, home, capsys):
  """Fine-tuning a (small) Whisper through its tower lowers for a v5e-8 slice, the
  encoder's heads and MLP split over the `model` axis."""
  code = main_lib.main(['compile', '--config', config_path('ravdess_whisper.py:fold1,finetune'),
                        '--topology', 'v5e:2x4', '--config.mesh.model=2', '--batch-size=16',
                        *_overrides(corpus)])
  out = capsys.readouterr().out
  assert code == 0 and "mesh {'data': 4, 'fsdp': 1, 'model': 2}" in out and 'TPU v5' in out
