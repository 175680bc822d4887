import json
import os

import pytest

from affectjax import config as config_lib
from affectjax import main as main_lib
from conftest import config_path


def test_overrides_are_typed():
  c = config_lib.load(config_path('synthetic.py:tfn'), [
      'optim.learning_rate=1', 'model.post_fusion_dim=32', 'data.modalities=text,audio',
      'data.variant=unique', 'model.hidden.text=8'])
  assert c.optim.learning_rate == 1.0 and isinstance(c.optim.learning_rate, float)
  assert c.model.post_fusion_dim == 32
  assert c.data.modalities == ('text', 'audio')
  assert c.data.variant == 'unique'
  assert c.model.hidden.text == 8
  assert c.name == 'synthetic:tfn'


def test_colon_argument_selects_variant():
  c = config_lib.load(config_path('synthetic.py:lmf') + ',unique,regression,smoke')
  assert (c.data.variant, c.task.name, c.train.num_steps) == ('unique', 'regression', 40)
  assert c.name == 'synthetic:lmf,unique,regression,smoke'


@pytest.mark.parametrize('override, message', [
    ('model.nonexistent=3', 'unknown config key: model.nonexistent'),
    ('nothere.x=3', 'unknown config key: nothere'),
    ('model.post_fusion_dim=abc', 'expected int'),
    ('model.post_fusion_dim=1.5', 'expected int'),
    ('train.num_steps', 'expected --config.train.num_steps=VALUE'),
    ('model=3', 'is a group'),
])
def test_bad_overrides(override, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.load(config_path('synthetic.py:tfn'), [override])


def test_config_is_locked():
  c = config_lib.load(config_path('synthetic.py:tfn'))
  with pytest.raises(AttributeError):
    c.model.typo = 1


@pytest.mark.parametrize('extra, fragment', [
    (['--config.model.nonexistent=3'], 'unknown config key: model.nonexistent'),
    (['--config.train.batch_size=big'], 'expected int'),
    (['--config.data.dir=/no/such/dir'], '/no/such/dir'),
])
def test_cli_errors_are_one_line_and_nonzero(tmp_path, capsys, extra, fragment):
  workdir = tmp_path / 'run'
  code = main_lib.main(['train', '--config', config_path('synthetic.py:tfn,smoke'),
                        '--workdir', str(workdir), *extra])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert err.startswith('affectjax: error:') and fragment in err
  assert len(err.splitlines()) == 1
  assert not (workdir / 'results.json').exists()
  assert not (workdir / 'checkpoints').exists()


def test_missing_data_dir_from_the_environment_is_the_same_error(tmp_path, capsys,
                                                               monkeypatch):
  monkeypatch.setenv('AFFECTJAX_DATA_DIR', '/no/such/dir')
  code = main_lib.main(['train', '--config', config_path('synthetic.py:tfn,smoke'),
                        '--workdir', str(tmp_path / 'w')])
  err = capsys.readouterr().err.strip()
  assert code == 2 and err == ('affectjax: error: $AFFECTJAX_DATA_DIR: no such directory: '
                               '/no/such/dir')
  assert not (tmp_path / 'w').exists()


def test_missing_config_file(capsys):
  assert main_lib.main(['train', '--config', 'configs/nope.py', '--workdir', '/tmp/x']) == 2
  assert 'config file not found: configs/nope.py' in capsys.readouterr().err


def test_saved_config_roundtrips(tmp_path):
  c = config_lib.load(config_path('synthetic.py:tfn'), ['seed=7'])
  path = os.path.join(tmp_path, 'config.json')
  config_lib.save(c, path)
  with open(path) as f:
    saved = json.load(f)
  assert saved['seed'] == 7 and saved['model']['name'] == 'tensor_fusion.TFN'


def test_unknown_selection_metric_fails_before_training(tmp_path, capsys):
  code = main_lib.main(['train', '--config', config_path('synthetic.py:tfn,smoke'),
                        '--workdir', str(tmp_path / 'run'), '--config.train.select_metric=acc2'])
  err = capsys.readouterr().err
  assert code == 2 and "select_metric: 'acc2' is not a validation metric" in err
  assert 'accuracy' in err and not (tmp_path / 'run').exists()


def test_a_python_config_with_another_extension_loads(tmp_path):
  text = open(config_path('synthetic.py')).read()
  (tmp_path / 'tfn.cfg').write_text(text)
  (tmp_path / 'common.py').write_text(open(config_path('common.py')).read())
  loaded = config_lib.load(str(tmp_path / 'tfn.cfg') + ':tfn,smoke')
  assert config_lib.to_dict(loaded) == config_lib.to_dict(
      config_lib.load(config_path('synthetic.py:tfn,smoke'))) | {'name': 'tfn:tfn,smoke'}


def test_ravdess_configs_say_their_measured_time():
  """Each RAVDESS config's docstring carries the paragraph config_times.py measured and
  wrote (step, evaluation and compile time, and the default run's length)."""
  import importlib.util
  from conftest import REPO
  spec = importlib.util.spec_from_file_location(
      'config_times', os.path.join(REPO, 'experiments', 'benchmarks', 'config_times.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for name in module.CONFIGS:
    with open(os.path.join(REPO, 'configs', f'{name.partition(":")[0]}.py')) as f:
      doc = ' '.join(f.read().split('"""')[1].split())
    heading = module._heading(name) + ' '
    paragraph = doc[doc.index(heading) + len(heading):].split('Time of :')[0]
    assert paragraph.split(': a training step')[0].endswith(
        'measured by experiments/benchmarks/config_times.py'), name
    assert 'min per fold' in paragraph, name
