"""The installed package: configs by name, the wheel's quick start from any directory."""

import glob
import os
import re
import subprocess
import sys

import pytest

from affectjax import config as config_lib
from conftest import REPO


def test_packaged_config_names_resolve_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  for spec in ('synthetic:tfn', 'synthetic.py:tfn', 'configs/synthetic.py:tfn,smoke'):
    assert config_lib.load(spec).model.name.endswith('TFN'), spec
  with pytest.raises(config_lib.ConfigError, match='nor a packaged config'):
    config_lib.load('synthetic_nope')
  with pytest.raises(config_lib.ConfigError, match='config file not found: elsewhere/x.py'):
    config_lib.load('elsewhere/x.py')


def test_every_subpackage_and_the_configs_are_in_the_wheel_list():
  with open(os.path.join(REPO, 'pyproject.toml')) as f:
    text = f.read()
  listed = set(re.findall(r'"(affectjax[\w.]*)"', text.split('[tool.setuptools]')[1]))
  found = {os.path.relpath(os.path.dirname(p), REPO).replace(os.sep, '.')
           for p in glob.glob(os.path.join(REPO, 'affectjax', '**', '__init__.py'),
                              recursive=True)}
  assert found | {'affectjax.configs'} <= listed, sorted(found - listed)


def test_wheel_installs_and_runs_the_quick_start_elsewhere(tmp_path):
  """`pip wheel`, a fresh venv (its dependencies from this interpreter's site-packages,
  the package itself only from the wheel), then the README's quick start, `--version`
  and `python -m affectjax` from a directory without configs/."""
  wheels = tmp_path / 'wheels'
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q', '-w', str(wheels),
                  REPO], check=True, capture_output=True)
  (wheel,) = glob.glob(str(wheels / 'affectjax-*.whl'))
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)],
                 check=True)
  python = str(venv / 'bin' / 'python')
  subprocess.run([python, '-m', 'pip', 'install', '-q', '--no-deps', wheel], check=True,
                 capture_output=True)
  work = tmp_path / 'elsewhere'
  work.mkdir()
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH='')
  where = subprocess.run([python, '-c', 'import affectjax; print(affectjax.__file__)'],
                         cwd=work, env=env, check=True, capture_output=True, text=True)
  assert where.stdout.startswith(str(venv))
  readme = open(os.path.join(REPO, 'README.md')).read()
  quick = re.search(r'&& (affectjax train --config configs/synthetic.py:tfn [^\n]*)', readme)
  args = quick.group(1).split()[1:]
  args[args.index('--workdir') + 1] = str(work / 'tfn')
  small = ['--config.train.num_steps=4', '--config.train.eval_every=4',
           '--config.data.num_train=64', '--config.data.num_valid=16',
           '--config.data.num_test=16', '--config.train.batch_size=16',
           '--config.train.eval_batch_size=16']
  out = subprocess.run([str(venv / 'bin' / 'affectjax'), *args, *small], cwd=work, env=env,
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-500:]
  assert (work / 'tfn' / 'results.json').exists()
  version = subprocess.run([python, '-m', 'affectjax', '--version'], cwd=work, env=env,
                           capture_output=True, text=True)
  from affectjax import __version__
  assert version.returncode == 0 and version.stdout.strip() == f'affectjax {__version__}'
