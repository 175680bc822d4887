"""Kill-and-resume equals an uninterrupted run; a NaN loss stops cleanly."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from affectjax import config as config_lib
from affectjax import train
from affectjax.data import pipeline
from conftest import REPO, config_path

ARGS = ['--config.train.num_steps=60', '--config.train.eval_every=10',
        '--config.train.log_every=5', '--config.data.num_train=512',
        '--config.mesh.model=2']


def _run(workdir, wait_for_step=None):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  cmd = [sys.executable, '-m', 'affectjax.main', 'train', '--config',
         config_path('synthetic_tfn.py:smoke'), '--workdir', str(workdir), *ARGS]
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
  if wait_for_step is None:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()[-3000:]
    return
  done = os.path.join(workdir, 'checkpoints', 'latest', str(wait_for_step),
                      'commit_success.txt')
  deadline = time.time() + 300
  while not os.path.exists(done):
    assert proc.poll() is None, 'run ended before it could be killed'
    assert time.time() < deadline
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(workdir, 'results.json'))


def _final_state(workdir):
  path = os.path.join(workdir, 'checkpoints', 'latest', '60', 'state')
  return ocp.StandardCheckpointer().restore(path)


def _results(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    r = json.load(f)
  r.pop('timing')
  return r


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path):
  straight, killed = tmp_path / 'straight', tmp_path / 'killed'
  _run(straight)
  _run(killed, wait_for_step=20)
  _run(killed)
  a, b = _final_state(straight), _final_state(killed)
  import jax
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bitwise
  assert _results(straight) == _results(killed)
  with open(straight / 'metrics.jsonl') as f1, open(killed / 'metrics.jsonl') as f2:
    assert f1.read() == f2.read()
  # A finished run is not run again.
  _run(killed)
  assert _results(straight) == _results(killed)


class _PoisonAfter:
  """Wraps the training iterator; from batch `k` on, the features hold NaN."""

  def __init__(self, it, k):
    self.it, self.k, self.n = it, k, 0

  def __next__(self):
    batch = next(self.it)
    self.n += 1
    if self.n >= self.k:
      batch['text'] = batch['text'] * np.nan
    return batch

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path, monkeypatch):
  real = pipeline.train_dataset
  monkeypatch.setattr(pipeline, 'train_dataset',
                      lambda *a, **k: _PoisonAfter(real(*a, **k), 14))
  config = config_lib.load(config_path('synthetic_tfn.py:smoke'),
                           [a[len('--config.'):] for a in ARGS])
  with pytest.raises(train.NonFiniteLossError, match=r'at step 14; .*step 10'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'results.json').exists()
  steps = sorted(os.listdir(tmp_path / 'checkpoints' / 'latest'))
  assert steps == ['10']
  state = ocp.StandardCheckpointer().restore(tmp_path / 'checkpoints/latest/10/state')
  import jax
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))
