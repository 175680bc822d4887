"""The audio masked autoencoder: what the encoder sees, where the loss is taken, the
trainer's masking stream (1 device vs 4x2, exact resume), and pretrain -> fine-tune."""

import json
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affectjax import checkpoint as checkpoint_lib
from affectjax import config as config_lib
from affectjax import faults, train
from affectjax import main as main_lib
from affectjax.models import mae
from conftest import config_path, load_script, train_losses

DATA = os.environ.get('AFFECTJAX_DATA_DIR', '')
needs_ravdess = pytest.mark.skipif(
    not os.path.isdir(os.path.join(DATA, 'ravdess', 'speech_16k')),
    reason='real data absent: set AFFECTJAX_DATA_DIR to the folder holding ravdess/')


def _batch(b=3, t=18, f=32):
  rng = np.random.default_rng(0)
  frames = np.ones((b, t), np.float32)
  frames[1, 9:] = 0  # Example 1 has 9 real frames: patches 3..4 of time are padding.
  return {'audio': jnp.asarray(rng.normal(size=(b, t, f)), jnp.float32),
          'frame_mask': jnp.asarray(frames), 'mask': jnp.ones((b,), jnp.float32)}


def test_encoder_sees_only_visible_patches_and_loss_is_on_hidden_real_patches():
  model = mae.AudioMAE(('audio',), patch=(4, 16), mask_ratio=0.75)
  batch = _batch()
  rngs = {'masking': jax.random.key(1)}
  params = model.init({'params': jax.random.key(0), **rngs}, batch, train=False)
  out = model.apply(params, batch, train=False, rngs=rngs)
  # 18 frames crop to 16: a 4 x 2 grid of patches, 2 of 8 visible per example.
  assert out['prediction'].shape == out['target'].shape == (3, 8, 64)
  masked = np.asarray(out['masked'])
  np.testing.assert_array_equal(masked.sum(1)[[0, 2]], 6)  # round(0.75 * 8) hidden.
  frame_ok = np.repeat(np.asarray([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]]), 2, axis=1)
  assert not masked[frame_ok == 0].any() and masked[1].sum() <= 6  # No loss on padding.
  assert len({tuple(r) for r in masked}) == 3  # Each example its own mask.
  # Changing the hidden patches' values changes the targets there, never the prediction.
  changed = np.asarray(batch['audio']).copy()
  noise = np.random.default_rng(7).normal(size=(4, 16)) * 3  # Not a shift: targets are
  for b in range(3):                                          # normalised per patch.
    for n in np.flatnonzero(masked[b]):
      ti, fi = divmod(int(n), 2)
      changed[b, 4 * ti:4 * ti + 4, 16 * fi:16 * fi + 16] += noise
  out2 = model.apply(params, dict(batch, audio=jnp.asarray(changed)), train=False, rngs=rngs)
  np.testing.assert_allclose(out2['prediction'], out['prediction'], atol=1e-5)
  assert np.abs(np.asarray(out2['target']) - np.asarray(out['target'])).max() > 0.1
  # A visible patch changed: the prediction changes.
  first_visible = int(np.flatnonzero(masked[0] == 0)[0])
  ti, fi = divmod(first_visible, 2)
  moved = np.asarray(batch['audio']).copy()
  moved[0, 4 * ti:4 * ti + 4, 16 * fi:16 * fi + 16] += 5.0
  out3 = model.apply(params, dict(batch, audio=jnp.asarray(moved)), train=False, rngs=rngs)
  assert np.abs(np.asarray(out3['prediction'][0]) - np.asarray(out['prediction'][0])).max() > 1e-3
  # Normalised targets: each patch has mean 0 and variance 1.
  np.testing.assert_allclose(np.asarray(out['target']).mean(-1), 0, atol=1e-5)
  with pytest.raises(ValueError, match='smaller than one patch'):
    model.apply(params, dict(batch, audio=batch['audio'][:, :3],
                             frame_mask=batch['frame_mask'][:, :3]), train=False, rngs=rngs)


def test_classifier_mounts_the_same_encoder():
  batch = _batch()
  pre = mae.AudioMAE(('audio',)).init({'params': jax.random.key(0),
                                       'masking': jax.random.key(1)}, batch, train=False)
  clf = mae.MAEClassifier(('audio',), out_dim=8).init(jax.random.key(0), batch,
                                                             train=False)
  shapes = lambda t: jax.tree.map(lambda x: x.shape, t)  # noqa: E731
  assert shapes(pre['params']['encoder']) == shapes(clf['params']['encoder'])
  assert set(clf['params']) == {'encoder', 'head'}
  with pytest.raises(ValueError, match="config.model.size: unknown 'huge'"):
    mae.size_of('huge')


def test_cls_pooling_keeps_the_encoder_and_reads_the_token():
  batch = _batch()
  model = mae.MAEClassifier(('audio',), out_dim=8, pool='cls')
  params = nn.meta.unbox(model.init(jax.random.key(0), batch, train=False)['params'])
  mean = nn.meta.unbox(mae.MAEClassifier(('audio',), out_dim=8).init(
      jax.random.key(0), batch, train=False)['params'])
  shapes = lambda t: jax.tree.map(lambda x: x.shape, t)  # noqa: E731
  assert shapes(params['encoder']) == shapes(mean['encoder'])  # Loads one to one.
  assert set(params) == {'encoder', 'head', 'cls_audio'}
  out = model.apply({'params': params}, batch, train=False)
  other = dict(params, cls_audio=params['cls_audio'] + 1.0)
  assert np.abs(np.asarray(model.apply({'params': other}, batch, train=False) - out)).max() > 1e-4
  # Example 1's time patch 3 (frames 12-15) holds padding only: it does not reach the CLS.
  padded = np.asarray(batch['audio']).copy()
  padded[1, 12:] = 50.0
  again = model.apply({'params': params}, dict(batch, audio=jnp.asarray(padded)), train=False)
  np.testing.assert_allclose(np.asarray(again)[1], np.asarray(out)[1], atol=1e-5)
  with pytest.raises(ValueError, match="pool 'max'"):
    mae.MAEClassifier(('audio',), out_dim=8, pool='max').init(jax.random.key(0), batch,
                                                              train=False)


def test_fine_tuning_hides_whole_time_rows_and_frequency_columns_in_training_only():
  from affectjax.layers import masking
  keep, masked = masking.structured_masking(jax.random.key(3), 4, (10, 4), 0.2, 0.25)
  masked = np.asarray(masked).reshape(4, 10, 4)
  assert keep.shape == (4, 8 * 3)  # 2 of 10 rows and 1 of 4 columns hidden per example.
  for b in range(4):
    rows, cols = masked[b].all(axis=1), masked[b].all(axis=0)
    assert rows.sum() == 2 and cols.sum() == 1
    np.testing.assert_array_equal(masked[b], rows[:, None] | cols[None, :])
    np.testing.assert_array_equal(np.flatnonzero(masked[b].ravel() == 0), keep[b])
  assert len({tuple(m.ravel()) for m in masked}) > 1  # Each example its own draw.
  with pytest.raises(ValueError, match='hide every row or column'):
    masking.structured_masking(jax.random.key(3), 4, (10, 4), 0.2, 1.0)
  batch = _batch(t=40)  # A 10 x 2 grid of patches.
  plain = mae.MAEClassifier(('audio',), out_dim=8)
  model = mae.MAEClassifier(('audio',), out_dim=8, time_mask=0.3, freq_mask=0.5)
  params = plain.init(jax.random.key(0), batch, train=False)
  # Evaluation sees every patch: the regulariser changes nothing there.
  np.testing.assert_allclose(model.apply(params, batch, train=False),
                             plain.apply(params, batch, train=False), atol=1e-6)
  out = lambda x, k: model.apply(params, dict(batch, audio=x), train=True,  # noqa: E731
                                 rngs={'dropout': jax.random.key(k)})
  first = np.asarray(out(batch['audio'], 1))
  assert np.abs(first - np.asarray(out(batch['audio'], 2))).max() > 1e-4
  # Under one draw, changing the hidden patches changes nothing; the encoder skips them.
  # (make_rng folds the module path into the key, so the hidden patches are found by
  # moving each patch in turn.)
  x = np.asarray(batch['audio']).copy()
  probe = np.zeros((3, 20), bool)
  for n in range(20):
    moved = x.copy()
    ti, fi = divmod(n, 2)
    moved[:, 4 * ti:4 * ti + 4, 16 * fi:16 * fi + 16] += 5.0
    probe[:, n] = np.abs(np.asarray(out(jnp.asarray(moved), 1)) - first).max(axis=1) > 1e-5
  # 3 of 10 rows and 1 of 2 columns hidden: 7 x 1 patches reach the head. Example 1's
  # rows 3..9 are padding, which reaches it either way.
  assert probe[0].sum() == probe[2].sum() == 7
  assert probe[1].sum() <= 3


@needs_ravdess
def test_one_device_and_4x2_mesh_pretraining_steps_agree():
  config = config_lib.load(config_path('ravdess_audiomae.py:fold1,smoke'))
  one, state1 = train_losses(config, (1, 1), 16, 2)
  eight, state8 = train_losses(config, (4, 2), 16, 2)
  np.testing.assert_allclose(one, eight, rtol=2e-4)
  assert one[1] < one[0] * 1.5 and np.isfinite(one).all()
  for x, y in zip(jax.tree.leaves(state1.params), jax.tree.leaves(state8.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-3, atol=1e-4)


class _Kill(BaseException):
  """Stands for SIGKILL inside this process: nothing catches it."""


def _flat(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _params(workdir, kind):
  ckpt = checkpoint_lib.Checkpoints(str(workdir))
  try:
    return ckpt.load_params(kind)
  finally:
    ckpt.close()


@needs_ravdess
def test_pretraining_resumes_exactly_then_fine_tunes(tmp_path, monkeypatch):
  overrides = ['train.num_steps=6', 'train.eval_every=3', 'train.log_every=3']
  config = config_lib.load(config_path('ravdess_audiomae.py:fold1,smoke'), overrides)
  run, resumed = tmp_path / 'run', tmp_path / 'resumed'
  train.train_and_evaluate(config, str(run))

  def point(p):
    if p == 'latest_saved':
      raise _Kill(p)
  monkeypatch.setattr(faults, 'point', point)
  with pytest.raises(_Kill):
    train.train_and_evaluate(config, str(resumed))
  monkeypatch.setattr(faults, 'point', lambda p: None)
  train.train_and_evaluate(config, str(resumed))
  a, b = _flat(_params(run, 'latest')[1]), _flat(_params(resumed, 'latest')[1])
  assert a.keys() == b.keys()
  for k in a:  # The masks of every step came from the step's key: the same run.
    np.testing.assert_array_equal(a[k], b[k])
  results = json.loads((run / 'results.json').read_text())
  again = json.loads((resumed / 'results.json').read_text())
  assert results['valid']['loss'] > 0
  assert (results['valid'], results['test']) == (again['valid'], again['test'])
  # The pretraining run draws its reconstructions itself (4 test clips, 3 panels each).
  from PIL import Image
  with Image.open(run / 'reconstruction.png') as im:
    assert im.size == (960, 704), im.size
  # Fine-tuning: the encoder loads one to one, the head is new and the encoder moves.
  _, source = _params(run, 'best')
  source = _flat(source)
  out = tmp_path / 'finetune'
  code = main_lib.main(['train', '--config',
                        config_path('ravdess_audiomae_classifier.py:fold1,smoke,finetune'),
                        '--workdir', str(out), f'--config.init.workdir={run}'])
  assert code == 0
  final = _flat(_params(out, 'latest')[1])
  enc = [k for k in final if k.startswith('encoder/')]
  assert enc and all(k in source for k in enc)
  assert max(float(np.abs(final[k] - source[k]).max()) for k in enc) > 0
  assert 0 <= json.loads((out / 'results.json').read_text())['test']['uar'] <= 1
  # A probe is the same run with the encoder frozen (a 0.0 scale; freezing itself is
  # tested in test_contrastive.py): its config says so.
  probe = config_lib.load(config_path('ravdess_audiomae_classifier.py:fold1,smoke,probe'),
                          [f'init.workdir={run}'])
  assert tuple(probe.optim.groups) == (('encoder/.*', 0.0),)
  assert tuple(map(tuple, probe.init.map)) == (('encoder', 'encoder'),)
  full = config_lib.load(
      config_path('ravdess_audiomae_classifier.py:fold1,smoke,finetune,fullrate'),
      [f'init.workdir={run}'])
  assert tuple(full.optim.groups) == (('encoder/.*', 1.0),)
  with pytest.raises(config_lib.ConfigError, match='use finetune,fullrate'):
    config_lib.load(config_path('ravdess_audiomae_classifier.py:fold1,smoke,fullrate'))


def test_study_chooses_the_fine_tuning_rate_per_fold_on_validation_only():
  study = load_script('mae', 'run.py')
  run = lambda valid, test: {'valid': {'accuracy': valid}, 'test': {'uar': test}}  # noqa: E731
  # Fold 1: 1.0x wins on validation though 0.1x is better on test; fold 2: a tie keeps 0.1x.
  summaries = [{'fold': 1, 'runs': {'finetune': run(0.4, 0.9), 'finetune_full': run(0.5, 0.1)}},
               {'fold': 2, 'runs': {'finetune': run(0.3, 0.2), 'finetune_full': run(0.3, 0.8)}}]
  chosen = study.select_rate(summaries)
  assert [s['runs']['finetune_selected']['test']['uar'] for s in summaries] == [0.1, 0.2]
  assert chosen[0].startswith('fold 1 1.0x') and chosen[1].startswith('fold 2 0.1x')
  assert study.select_rate([{'fold': 1, 'runs': {'finetune': run(0.4, 0.9)}}]) == []



def test_study_baselines_share_its_folds_and_face_the_logistic_regression(tmp_path):
  """The study's supervised SpeechSSM/SpeechTransformer rows: their own models, the MAE
  classifiers' data (fold, 4 validation actors, normalisation) and their own step count;
  each supervised row is checked against the logistic regression."""
  import argparse
  study = load_script('mae', 'run.py')
  args = argparse.Namespace(size='tiny', smoke=True, pretrain_steps=4, pretrain_every=2,
                            finetune_steps=4, finetune_every=2, baseline_steps=6,
                            classifiers='scratch,ssm,transformer', audio_norm='speaker')
  runs = study.configs(3, str(tmp_path), args)
  scratch = runs['scratch'][0]
  for name, model in (('ssm', 'ssm.SpeechSSM'), ('transformer', 'speech.SpeechTransformer')):
    config, run_dir = runs[name]
    assert config.model.name == model and run_dir == str(tmp_path / 'fold3' / name)
    assert config.data.to_dict() == scratch.data.to_dict()
    assert config.data.num_valid == 4 and config.data.audio_norm == 'speaker'
    assert (config.train.num_steps, scratch.train.num_steps) == (6, 4)
  run = lambda uar: {'test': {'uar': uar}}  # noqa: E731
  summaries = [{'reference': {'uar': 0.5},
                'runs': {'scratch': run(0.4), 'ssm': run(0.6), 'transformer': run(0.45)}}]
  lines = study.target_lines(summaries).splitlines()
  assert len(lines) == 3 and not any('Target' in x for x in lines)
  assert lines[1] == ('- Baseline check: SpeechSSM (S5) on log-mel frames, supervised 60.0 '
                      'UAR against logistic regression on log-mel statistics 50.0 (beats it).')
  assert lines[0].endswith('(does not beat it).') and lines[2].endswith('(does not beat it).')

def _video_batch(b=2, t=4, size=32):
  rng = np.random.default_rng(3)
  return {'video': jnp.asarray(rng.normal(size=(b, t, size, size, 3)), jnp.float32),
          'mask': jnp.ones((b,), jnp.float32)}


def test_video_mae_tube_masks_and_sees_only_visible_tubelets():
  model = mae.VideoMAE(('video',), tubelet=(2, 16, 16), mask_ratio=0.5)
  batch = _video_batch()
  rngs = {'masking': jax.random.key(4)}
  params = model.init({'params': jax.random.key(0), **rngs}, batch, train=False)
  out = model.apply(params, batch, train=False, rngs=rngs)
  # 4 frames x 32 x 32 in (2, 16, 16) tubelets: a 2 x 2 x 2 grid, 2 x 3 x 256 values each.
  assert out['prediction'].shape == out['target'].shape == (2, 8, 1536)
  masked = np.asarray(out['masked']).reshape(2, 2, 4)  # (example, time, space)
  np.testing.assert_array_equal(masked[:, 0], masked[:, 1])  # The same tube at every time.
  np.testing.assert_array_equal(masked.sum((1, 2)), 4)
  changed = np.asarray(batch['video']).copy()
  for b in range(2):
    for s in np.flatnonzero(masked[b, 0]):
      hi, wi = divmod(int(s), 2)
      changed[b, :, 16 * hi:16 * hi + 16, 16 * wi:16 * wi + 16] *= 3.0
  out2 = model.apply(params, dict(batch, video=jnp.asarray(changed)), train=False, rngs=rngs)
  np.testing.assert_allclose(out2['prediction'], out['prediction'], atol=1e-5)
  with pytest.raises(ValueError, match='not a multiple of the patch size 16'):
    model.apply(params, dict(batch, video=batch['video'][:, :, :24]), train=False, rngs=rngs)


def _av_batch():
  return {**_batch(b=2, t=16, f=32), **_video_batch()}


def test_audio_visual_mae_fuses_skips_and_its_contrastive_term_counts(monkeypatch):
  from affectjax import tasks
  model = mae.AudioVisualMAE(('audio', 'video'), decoder_depth=2, fusion_depth=1)
  batch = _av_batch()
  rngs = {'masking': jax.random.key(2)}
  params = model.init({'params': jax.random.key(0), **rngs}, batch, train=False)
  p = params['params']
  assert {'audio_encoder', 'video_encoder', 'fusion', 'audio_decoder', 'video_decoder'} <= set(p)
  assert 'cross_query' in p['audio_decoder']['layer_1']  # The skip connection's attention.
  out = model.apply(params, batch, train=False, rngs=rngs)
  rec = out['reconstruction']
  assert rec['audio']['prediction'].shape == (2, 8, 64)
  assert rec['video']['prediction'].shape == (2, 8, 1536)
  assert out['levels']['audio'].shape == out['levels']['video'].shape == (1, 2, 64)
  np.testing.assert_allclose(np.linalg.norm(out['levels']['audio'], axis=-1), 1, atol=1e-5)
  # The video stream reads the audio through fusion: changing the audio changes it.
  louder = dict(batch, audio=batch['audio'] * 2 + 1)
  out2 = model.apply(params, louder, train=False, rngs=rngs)
  assert np.abs(np.asarray(out2['reconstruction']['video']['prediction']) -
                np.asarray(rec['video']['prediction'])).max() > 1e-4
  config = config_lib.base_config()
  config.data.modalities = ('audio', 'video')
  config.task.name, config.task.loss = 'masked_reconstruction', 'mse'
  plain = tasks.get_task(config)
  config.task.contrastive_weight = 0.5
  weighted = tasks.get_task(config)
  loss0, aux0 = plain.loss(out, batch)
  loss1, aux1 = weighted.loss(out, batch)
  np.testing.assert_allclose(float(aux0['reconstruction_audio'] + aux0['reconstruction_video']),
                             float(loss0), rtol=1e-6)
  np.testing.assert_allclose(float(loss1), float(loss0) + 0.5 * float(aux1['contrastive']),
                             rtol=1e-6)
  assert float(aux1['contrastive']) > 0
  assert weighted.metric_names() == ('loss', 'loss_audio', 'loss_video')
  gathered = jax.tree.map(np.asarray, weighted.eval_outputs(out, batch))
  m = weighted.metrics(gathered)
  np.testing.assert_allclose(m['loss'], m['loss_audio'] + m['loss_video'], rtol=1e-6)
  # The classifier mounts the same encoders and fusion under the same paths.
  clf = mae.MAEClassifier(('audio', 'video'), out_dim=8, fusion_depth=1).init(
      jax.random.key(1), batch, train=False)['params']
  shapes = lambda t: jax.tree.map(lambda x: x.shape, t)  # noqa: E731
  for name in ('audio_encoder', 'video_encoder', 'fusion'):
    assert shapes(clf[name]) == shapes(p[name]), name
  assert set(clf) == {'audio_encoder', 'video_encoder', 'fusion', 'head'}


@pytest.mark.experiment  # About 2 minutes: four smoke runs, each compiled.
@needs_ravdess
def test_study_script_names_per_speaker_normalisation_and_writes_its_table(tmp_path):
  study = load_script('mae', 'run.py')
  out = tmp_path / 'RESULTS.md'
  assert study.main(['--workdir', str(tmp_path / 'w'), '--folds', '1', '--smoke',
                     '--pretrain-steps', '2', '--pretrain-every', '2', '--finetune-steps', '2',
                     '--finetune-every', '2', '--baseline-steps', '2', '--audio-norm', 'speaker',
                     '--figures', str(tmp_path), '--out', str(out)]) == 0
  text = out.read_text()
  summary = json.loads((tmp_path / 'w' / 'fold1' / 'summary.json').read_text())
  assert '**Per-speaker normalisation**' in text and '--audio-norm speaker' in text
  assert f"{100 * summary['reference']['uar']:.1f}" in text
  # EmoDB's levels as read from its files (../shared's copies are peak-normalised).
  assert re.search(r'mean peak\s+amplitude per emotion neutral 1\.00, happy 0\.9\d', text)
  saved = json.loads((tmp_path / 'w' / 'fold1' / 'scratch' / 'config.json').read_text())
  assert saved['data']['audio_norm'] == 'speaker'
  assert (tmp_path / 'reconstruction_fold1.png').stat().st_size > 0
