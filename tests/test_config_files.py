"""The config files (issue 38): each states its whole run as literal blocks, reads its
variants through the one parser, resolves every documented variant to the values it had
before the rewrite, and no data module writes the config."""

import ast
import dataclasses
import glob
import importlib.util
import json
import os
import sys

import pytest

import config_values
from affectjax import models
from affectjax.data import erc
from conftest import REPO

# Fixes made on purpose by the rewrite, {run as stored: {flat key: new JSON value}}. None:
# every stored run resolves to exactly the values it had.
INTENDED = {}


def _today_runs():
  """(file, variants) of every stored run, as named today."""
  return sorted({config_values.today(*key.split(':', 1)) for key in _stored()})


def _stored():
  with open(config_values.STORED) as f:
    return json.load(f)


def test_every_documented_variant_resolves_as_before_the_rewrite():
  stored = _stored()
  assert len(stored) == 294
  for key, before in stored.items():
    name, arg = config_values.today(*key.split(':', 1))
    now = config_values.resolve(name, arg)
    expected = {**before, **INTENDED.get(key, {})}
    changed = {k: (expected.get(k), now.get(k)) for k in set(expected) | set(now)
               if expected.get(k) != now.get(k)}
    assert not changed, (key, f'{name}:{arg}', changed)


def test_every_config_file_is_covered_by_the_record():
  files = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))}
  assert files - {'common'} == {name for name, _ in _today_runs()}


def test_each_config_states_every_field_of_its_model_class():
  """A reader finds every hyperparameter of the model in the config file: no field is left
  to the class default."""
  for name, arg in _today_runs():
    values = config_values.resolve(name, arg)
    model_name = json.loads(values['model.name'])
    stated = {k.split('.')[1] for k in values if k.startswith('model.')}
    missing = set(models.config_fields(model_name)) - stated
    assert not missing, (f'{name}:{arg}', model_name, sorted(missing))


def _writes_outside_data(source: str) -> list[str]:
  """Assignments, augmented assignments and update() calls on `config.<group>` (or a
  `c.<group>`) for any group but `data`, in a module's source."""
  def dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
      parts.append(node.attr)
      node = node.value
    return '.'.join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ''

  found = []
  for node in ast.walk(ast.parse(source)):
    targets, call = [], False
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      for t in list(targets):
        if isinstance(t, ast.Tuple):
          targets.extend(t.elts)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
        node.func.attr in ('update', 'unlock', 'unlocked')):
      targets, call = [node.func.value], True
    for t in targets:
      name = dotted(t)
      parts = name.split('.')
      if parts[0] in ('config', 'c') and (call if len(parts) == 1 else parts[1] != 'data'):
        found.append(name)
  return found


def test_no_data_module_writes_outside_config_data():
  assert _writes_outside_data('config.train.num_steps = 3\nc.task.update(name="x")\n'
                              'config.data.fold = 2\nconfig.unlocked()') == [
                                  'config.train.num_steps', 'c.task', 'config']
  for path in glob.glob(os.path.join(REPO, 'affectjax', 'data', '*.py')):
    with open(path) as f:
      source = f.read()
    assert _writes_outside_data(source) == [], path
    assert 'def configure(' not in source, path  # The configs state the data block.


def test_pretraining_and_fine_tuning_towers_match():
  """`config.init.map` loads the towers one to one, so each fine-tuning config restates
  its pretraining config's towers exactly."""
  def towers(name, arg):
    return {k: v for k, v in config_values.resolve(name, arg).items()
            if k.startswith('model.towers.')}
  assert towers('mosi_towers', 'finetune') == towers('mosi_contrastive', '')
  for extra in ('', ',whisper'):
    assert towers('ravdess_av_classifier', 'finetune' + extra) == towers(
        'ravdess_contrastive', extra.strip(','))


def _config_module(name):
  """configs/<name>.py as a module (its `import common` finds configs/common.py)."""
  spec = importlib.util.spec_from_file_location(f'_configs_{name}',
                                                os.path.join(REPO, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  sys.path.insert(0, os.path.join(REPO, 'configs'))
  try:
    spec.loader.exec_module(module)
  finally:
    sys.path.pop(0)
  return module


def test_erc_class_counts_match_the_corpora():
  module = _config_module('erc')
  for (corpus, field), n in module.NUM_CLASSES.items():
    assert n == erc.num_classes(type('D', (), {'corpus': corpus, 'label_field': field})), (
        corpus, field)


def test_variants_are_exact_names_read_once():
  common = _config_module('common')
  v = common.variants('fold3,meld,smoke', flags=('smoke',), folds=6,
                      corpus=('iemocap', 'meld'))
  assert (v.fold, v.corpus, v.smoke) == (3, 'meld', True)
  assert common.variants('', flags=('smoke',), folds=6, corpus=('iemocap', 'meld')).__dict__ == {
      'smoke': False, 'fold': 1, 'corpus': 'iemocap'}
  for arg, message in (('fold7', "unknown config variant 'fold7'"),
                       ('smokey', "unknown config variant 'smokey'"),
                       ('meld,iemocap', "'meld' and 'iemocap' both set corpus"),
                       ('fold1,fold2', "both set fold"),
                       ('smoke,smoke', 'given twice')):
    with pytest.raises(ValueError, match=message):
      common.variants(arg, flags=('smoke',), folds=6, corpus=('iemocap', 'meld'))
  assert common.subsets('tav') == ('t', 'a', 'v', 'ta', 'tv', 'av', 'tav')
  assert common.modalities('tv') == ('text', 'vision')
  with pytest.raises(ValueError, match="unknown config variant 'at'"):
    common.variants('at', subset=common.subsets('tav'))


def test_a_spec_joins_a_family_model_and_variants():
  from affectjax import config as config_lib
  assert config_lib.spec('mosi:ssm', 'fold2').endswith(os.path.join('configs', 'mosi.py') +
                                                         ':ssm,fold2')
  assert config_lib.spec('synthetic', '').endswith(os.path.join('configs', 'synthetic.py'))
  assert config_lib.load(config_lib.spec('erc:broadmamba', 'meld', 'smoke')).data.corpus == 'meld'
