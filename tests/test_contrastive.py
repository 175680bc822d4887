"""Contrastive losses (against NumPy, padding, 1 device vs a 4x2 mesh, the shard_map form),
and pretrain -> fine-tune through config.init and parameter groups."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from affectjax import checkpoint as checkpoint_lib
from affectjax import config as config_lib
from affectjax import faults, losses, sharding, train
from affectjax import experiment
from affectjax import main as main_lib
from conftest import config_path, load_script

DATA = os.environ.get('AFFECTJAX_DATA_DIR', '')
needs_ravdess = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DATA, 'ravdess', 'au_mfcc.npz')),
    reason='real data absent: set AFFECTJAX_DATA_DIR to the folder holding ravdess/')
needs_mosi = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DATA, 'mosi', 'mosi_utterances.npz')),
    reason='real data absent: set AFFECTJAX_DATA_DIR to the folder holding mosi/')

N, D = 24, 7  # Divisible by the 8 devices; odd width.


def _emb(seed, n=N, d=D):
  x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clip_reference(a, b, scale, mask):
  """Naive loops: for each real row, -log softmax over real columns, both directions."""
  real = np.flatnonzero(mask)
  total = 0.0
  for x, y in ((a, b), (b, a)):
    for i in real:
      logits = np.array([scale * float(x[i] @ y[j]) for j in real], np.float64)
      pos = list(real).index(i)
      total += np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[pos]
  return total / (2 * len(real))


def _sigmoid_reference(a, b, scale, bias, mask):
  real = np.flatnonzero(mask)
  total = 0.0
  for i in real:
    for j in real:
      z = 1.0 if i == j else -1.0
      total += np.log1p(np.exp(-z * (scale * float(a[i] @ b[j]) + bias)))
  return total / len(real)


def _supcon_reference(x, labels, tau, mask):
  real = np.flatnonzero(mask)
  total, anchors = 0.0, 0
  for i in real:
    others = [j for j in real if j != i]
    pos = [j for j in others if labels[j] == labels[i]]
    if not pos:
      continue
    logits = np.array([float(x[i] @ x[j]) / tau for j in others])
    lse = np.log(np.exp(logits - logits.max()).sum()) + logits.max()
    total += -np.mean([float(x[i] @ x[p]) / tau - lse for p in pos])
    anchors += 1
  return total / anchors


def test_losses_equal_numpy_references_and_ignore_padding():
  a, b = _emb(0), _emb(1)
  mask = np.ones(N, np.float32)
  mask[[3, 10, 23]] = 0
  labels = np.random.default_rng(2).integers(0, 4, N)
  got = losses.clip_loss(a, b, 7.0, mask)
  np.testing.assert_allclose(got, _clip_reference(a, b, 7.0, mask), rtol=1e-5)
  np.testing.assert_allclose(losses.sigmoid_loss(a, b, 7.0, -3.0, mask),
                             _sigmoid_reference(a, b, 7.0, -3.0, mask), rtol=1e-5)
  np.testing.assert_allclose(losses.supervised_contrastive_loss(a, labels, 0.1, mask),
                             _supcon_reference(a, labels, 0.1, mask), rtol=1e-5)
  # Padded rows may hold anything: values and the real rows' gradients do not change.
  noisy_a, noisy_b = a.copy(), b.copy()
  noisy_a[mask == 0] = 5.0
  noisy_b[mask == 0] = -3.0
  for fn in (lambda x, y: losses.clip_loss(x, y, 7.0, mask),
             lambda x, y: losses.sigmoid_loss(x, y, 7.0, -3.0, mask)):
    v1, g1 = jax.value_and_grad(fn, argnums=(0, 1))(a, b)
    v2, g2 = jax.value_and_grad(fn, argnums=(0, 1))(noisy_a, noisy_b)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    for x, y in zip(g1, g2):
      np.testing.assert_allclose(np.asarray(x)[mask > 0], np.asarray(y)[mask > 0], atol=1e-7)
      assert not np.asarray(y)[mask == 0].any()


@pytest.mark.parametrize('kind', ['infonce', 'sigmoid'])
def test_shard_map_form_equals_global_form_on_a_4x2_mesh(kind):
  mesh = sharding.make_mesh({'data': 4, 'model': 2})
  a, b = _emb(3), _emb(4)
  mask = np.ones(N, np.float32)
  mask[[0, 7, 19]] = 0  # Padding on several devices.
  args = (7.0,) if kind == 'infonce' else (7.0, -3.0)
  base = losses.clip_loss if kind == 'infonce' else losses.sigmoid_loss

  def global_form(x, y, s):
    return base(x, y, s, *args[1:], mask)

  def lean_form(x, y, s):
    # Blocks of 5 columns: several blocks and a padded last one.
    return losses.sharded(base, mesh, 'data', block=5)(x, y, s, *args[1:], mask)

  rows = NamedSharding(mesh, P('data'))
  one = jax.devices()[:1]
  want, want_g = jax.jit(jax.value_and_grad(global_form, argnums=(0, 1, 2)))(
      *jax.device_put((a, b, args[0]), one[0]))
  with jax.set_mesh(mesh):
    sa, sb = jax.device_put(a, rows), jax.device_put(b, rows)
    for fn in (global_form, lean_form):
      got, got_g = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))(sa, sb, args[0])
      np.testing.assert_allclose(got, want, rtol=1e-5)
      for x, y in zip(got_g, want_g):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)
  # Negatives really span the global batch: per-device losses over local rows only differ.
  local = np.mean([base(a[i:i + 3], b[i:i + 3], *args, mask[i:i + 3]) for i in range(0, N, 3)])
  assert abs(float(local) - float(want)) > 0.1


@pytest.mark.parametrize('axes', ['data', ('data', 'model')])
def test_supervised_contrastive_shard_map_form_equals_global_form(axes):
  """Rows split over one mesh axis or over both (8 shards): the self-exclusion must use
  each row's global index, and positives/negatives span every device."""
  mesh = sharding.make_mesh({'data': 4, 'model': 2})
  x = _emb(5)
  labels = np.random.default_rng(6).integers(0, 3, N).astype(np.int32)
  mask = np.ones(N, np.float32)
  mask[[1, 8, 22]] = 0
  want, want_g = jax.value_and_grad(
      lambda v: losses.supervised_contrastive_loss(v, labels, 0.2, mask))(x)
  np.testing.assert_allclose(want, _supcon_reference(x, labels, 0.2, mask), rtol=1e-5)
  lean = losses.sharded(losses.supervised_contrastive_loss, mesh, axes, block=5)
  with jax.set_mesh(mesh):
    rows = NamedSharding(mesh, P(axes))
    got, got_g = jax.jit(jax.value_and_grad(lambda v, y: lean(v, y, 0.2, mask)))(
        jax.device_put(x, rows), jax.device_put(labels, rows))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(got_g), np.asarray(want_g), rtol=1e-4, atol=1e-6)
  assert not np.asarray(got_g)[mask == 0].any()
  # Positives within one shard only would give another value.
  shard = N // 8
  local = np.mean([losses.supervised_contrastive_loss(
      x[i:i + shard], labels[i:i + shard], 0.2, mask[i:i + shard]) for i in range(0, N, shard)])
  assert abs(float(local) - float(want)) > 0.05


def test_lean_form_memory_grows_linearly_in_the_global_batch():
  """Compiled per-device temporaries of the shard_map loss: 4x the rows, about 4x the
  memory (local rows x one column block), where N x N logits would grow 16x."""
  mesh = sharding.make_mesh({'data': 8, 'model': 1})

  def temp(n):
    spec = jax.ShapeDtypeStruct((n, 16), jnp.float32, sharding=NamedSharding(mesh, P('data')))
    mask = jax.ShapeDtypeStruct((n,), jnp.float32, sharding=NamedSharding(mesh, P('data')))
    fn = lambda a, b, m: losses.sharded(losses.clip_loss, mesh, 'data', 256)(a, b, 10.0, m)  # noqa: E731
    with jax.set_mesh(mesh):
      c = jax.jit(jax.grad(fn, argnums=(0, 1))).lower(spec, spec, mask).compile()
    return c.memory_analysis().temp_size_in_bytes

  small, large = temp(2048), temp(8192)
  assert large / small < 6
  assert large < 8192 * 8192 * 4 / 8  # Below one device's share of the N x N logits.


@needs_ravdess
def test_audio_visual_pairs_normalise_log_mel_per_speaker():
  """`data.audio_norm=speaker`: each actor's real frames, in every split, have zero mean
  and unit variance per band; the default (`train`) gives other features from the same
  frames; an unknown norm names the choices."""
  from affectjax.data import get_dataset
  from affectjax.data.base import DataError
  spec = config_path('ravdess_contrastive.py:fold1,smoke')
  speaker = get_dataset(config_lib.load(spec, ['data.audio_norm=speaker']))
  pooled = get_dataset(config_lib.load(spec))
  for name, source in speaker.splits.items():
    a = source.arrays
    for actor in np.unique(a['actor']):
      rows = a['actor'] == actor
      frames = a['audio'][rows][a['frame_mask'][rows] > 0]
      np.testing.assert_allclose(frames.mean(0), 0, atol=1e-3)
      np.testing.assert_allclose(frames.std(0), 1, atol=1e-2)
    assert (a['audio'][a['frame_mask'] == 0] == 0).all()
    np.testing.assert_array_equal(a['frame_mask'], pooled.splits[name].arrays['frame_mask'])
    assert not np.allclose(a['audio'], pooled.splits[name].arrays['audio'], atol=1e-2)
  with pytest.raises(DataError, match=r"audio_norm: 'global' \(clip \| train \| speaker\)"):
    get_dataset(config_lib.load(spec, ['data.audio_norm=global']))


@needs_ravdess
@pytest.mark.parametrize('variant', ['', ',supcon'])
def test_one_device_and_4x2_mesh_pretraining_steps_agree(variant):
  from conftest import train_losses
  config = config_lib.load(config_path(f'ravdess_contrastive.py:fold1,smoke{variant}'))
  one, state1 = train_losses(config, (1, 1), 16, 2)
  eight, state8 = train_losses(config, (4, 2), 16, 2)
  np.testing.assert_allclose(one, eight, rtol=2e-4)
  # Adam's first steps are about lr = 1e-3 in size whatever the gradient's, so parameters
  # whose gradient is near zero may differ by float noise well below a step.
  for x, y in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state8.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-3, atol=1e-4)


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('pretrain') / 'run'
  code = main_lib.main(['train', '--config', config_path('ravdess_contrastive.py:fold1,smoke'),
                        '--workdir', str(workdir), '--config.train.num_steps=12',
                        '--config.train.eval_every=6'])
  assert code == 0
  return workdir


def _classifier(workdir, *variant_and_overrides):
  variants = [v for v in variant_and_overrides if '=' not in v]
  overrides = [o for o in variant_and_overrides if '=' in o]
  spec = config_path('ravdess_av_classifier.py:' + ','.join(['fold1', 'smoke', *variants]))
  return config_lib.load(spec, [f'init.workdir={workdir}', *overrides])


def _params(workdir, kind='best'):
  ckpt = checkpoint_lib.Checkpoints(str(workdir))
  out = ckpt.load_params(kind)
  ckpt.close()
  return out


def _flat(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


class _Kill(BaseException):
  """Stands for SIGKILL inside this process: nothing catches it."""


@needs_ravdess
def test_pretraining_run_reports_retrieval_and_resumes_exactly(pretrained, tmp_path,
                                                                monkeypatch):
  results = json.loads((pretrained / 'results.json').read_text())
  for split in ('valid', 'test'):
    for key in ('audio_to_face/r1', 'face_to_audio/r5', 'mean_r1', 'probe_audio/uar',
                'knn_face/accuracy'):
      assert 0.0 <= results[split][key] <= 1.0
  records = [json.loads(l) for l in (pretrained / 'metrics.jsonl').read_text().splitlines()]
  assert set(records[0]['train_aux']) == {'loss/audio_face', 'scale'}
  # Killed right after step 6's latest checkpoint, then rerun: the same run.
  config = config_lib.load(config_path('ravdess_contrastive.py:fold1,smoke'),
                           ['train.num_steps=12', 'train.eval_every=6'])

  def point(p):
    if p == 'latest_saved':
      raise _Kill(p)
  monkeypatch.setattr(faults, 'point', point)
  with pytest.raises(_Kill):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  monkeypatch.setattr(faults, 'point', lambda p: None)
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  a = _flat(_params(pretrained, 'latest')[1])
  b = _flat(_params(tmp_path / 'resumed', 'latest')[1])
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert (pretrained / 'metrics.jsonl').read_text() == (
      tmp_path / 'resumed' / 'metrics.jsonl').read_text()


@needs_ravdess
def test_finetuning_loads_the_towers_keeps_the_head_fresh_and_freezes_the_group(
    pretrained, tmp_path):
  _, source = _params(pretrained, 'best')
  source = _flat(source)
  config = _classifier(pretrained, 'probe', 'train.num_steps=4', 'train.eval_every=2')
  dataset, exp = experiment.setup(config)
  fresh = _flat(exp.lower_init().compile()(jax.random.PRNGKey(0)).params)
  loaded = _flat(exp.init_state(0).params)
  towers = [k for k in loaded if k.startswith('towers/')]
  assert towers and all(k in source for k in towers)
  for k in towers:
    np.testing.assert_array_equal(loaded[k], source[k])
  heads = [k for k in loaded if not k.startswith('towers/')]
  assert heads
  for k in heads:  # The new head keeps its random initialisation.
    np.testing.assert_array_equal(loaded[k], fresh[k])
  train.train_and_evaluate(config, str(tmp_path / 'probe'))
  trained = _flat(_params(tmp_path / 'probe', 'latest')[1])
  for k in towers:  # Frozen: not moved by 4 steps.
    np.testing.assert_array_equal(trained[k], source[k])
  assert any(not np.array_equal(trained[k], loaded[k]) for k in heads)
  # Fine-tuning through the CLI, as the README runs it, moves the towers (at 0.1x).
  assert main_lib.main([
      'train', '--config', config_path('ravdess_av_classifier.py:fold1,smoke,finetune'),
      f'--config.init.workdir={pretrained}', '--config.train.num_steps=4',
      '--config.train.eval_every=2', '--workdir', str(tmp_path / 'finetune')]) == 0
  tuned = _flat(_params(tmp_path / 'finetune', 'latest')[1])
  assert any(not np.array_equal(tuned[k], source[k]) for k in towers)


@needs_ravdess
def test_dont_load_and_bad_sources_are_one_line_errors(pretrained, tmp_path, capsys):
  config = _classifier(pretrained, 'finetune', 'init.dont_load=("towers/face/.*",)')
  _, exp = experiment.setup(config)
  _, source = _params(pretrained, 'best')
  source = _flat(source)
  loaded = _flat(exp.init_state(0).params)
  fresh = _flat(exp.lower_init().compile()(jax.random.PRNGKey(0)).params)
  for k in loaded:
    if k.startswith('towers/face/'):
      np.testing.assert_array_equal(loaded[k], fresh[k])
    elif k.startswith('towers/audio/'):
      np.testing.assert_array_equal(loaded[k], source[k])
  base = ['train', '--config', config_path('ravdess_av_classifier.py:fold1,smoke,finetune'),
          '--workdir', str(tmp_path / 'w')]
  cases = {
      # A wider face tower: the pretrained kernel does not fit.
      'shape': (['--config.init.workdir=' + str(pretrained),
                 '--config.model.towers.face.width=72'],
                'towers/face/dense_0/bias has shape (64,) but this model\'s '
                'towers/face/dense_0/bias has (72,)'),
      'missing': (['--config.init.workdir=' + str(tmp_path / 'nowhere')],
                  'config.init.workdir: no such directory'),
      'no checkpoint': (['--config.init.workdir=' + str(tmp_path)],
                        'no best checkpoint to load from'),
      'no counterpart': (['--config.init.workdir=' + str(pretrained),
                          '--config.init.map=(("towers","head"),)'],
                         'config.init'),
  }
  for name, (extra, fragment) in cases.items():
    assert main_lib.main(base + extra) == 2, name
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], (name, err)
    assert not (tmp_path / 'w').exists(), name


@needs_mosi
def test_mosi_three_tower_pretraining_then_fusion_through_the_cli(tmp_path):
  pre, fused = tmp_path / 'pre', tmp_path / 'fused'
  assert main_lib.main(['train', '--config', config_path('mosi_contrastive.py:smoke'),
                        '--workdir', str(pre), '--config.train.num_steps=6',
                        '--config.train.eval_every=3']) == 0
  results = json.loads((pre / 'results.json').read_text())
  for key in ('text_to_audio/r1', 'vision_to_text/r5', 'audio_to_vision/median_rank'):
    assert key in results['test']
  assert main_lib.main(['train', '--config', config_path('mosi_towers.py:finetune,smoke'),
                        f'--config.init.workdir={pre}', '--workdir', str(fused),
                        '--config.train.num_steps=4', '--config.train.eval_every=2']) == 0
  assert np.isfinite(json.loads((fused / 'results.json').read_text())['test']['mae'])
  # The fusion model's three towers start as the pretraining run's best towers.
  config = config_lib.load(config_path('mosi_towers.py:finetune,smoke'),
                           [f'init.workdir={pre}'])
  _, exp = experiment.setup(config)
  loaded, source = _flat(exp.init_state(0).params), _flat(_params(pre, 'best')[1])
  towers = [k for k in loaded if k.startswith('towers/')]
  assert {k.split('/')[1] for k in towers} == {'text', 'audio', 'vision'}
  for k in towers:
    np.testing.assert_array_equal(loaded[k], source[k])


@pytest.mark.experiment  # About 2 minutes: ten smoke runs, each compiled.
@needs_ravdess
@needs_mosi
def test_study_script_writes_its_tables_from_its_runs(tmp_path):
  study = load_script('contrastive', 'run.py')
  out = tmp_path / 'RESULTS.md'
  assert study.main(['--workdir', str(tmp_path / 'w'), '--folds', '1', '--mosi-seeds', '1',
                     '--smoke', '--out', str(out)]) == 0
  text = out.read_text()
  summary = json.loads((tmp_path / 'w' / 'fold1' / 'summary.json').read_text())
  uar = 100 * summary['runs']['finetune']['test']['uar']
  assert f'the fused fine-tuned model above 72 UAR: {uar:.1f}' in text
  for row in ('logistic regression on action units + log-mel statistics',
              'audio tower from scratch', 'InfoNCE-pretrained towers, fine-tuned',
              '| sigmoid |', '| chance |', 'ridge regression on text+audio+video',
              'towers + fusion head from scratch'):
    assert row in text, row
