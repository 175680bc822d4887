"""A NaN loss stops cleanly with the last good checkpoint (kills: test_crash_safety)."""

import os

import numpy as np
import pytest

from affectjax import config as config_lib
from affectjax import train
from affectjax.data import pipeline
from conftest import config_path, saved_state

ARGS = ['--config.train.num_steps=60', '--config.train.eval_every=10',
        '--config.train.log_every=5', '--config.data.num_train=512',
        '--config.mesh.model=2']


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
  config = config_lib.load(config_path('synthetic.py:tfn,smoke'),
                           [a[len('--config.'):] for a in ARGS])
  with pytest.raises(train.NonFiniteLossError, match=r'at step 14; .*step 10'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'results.json').exists()
  steps = sorted(os.listdir(tmp_path / 'checkpoints' / 'latest'))
  assert steps == ['10']
  state = saved_state(tmp_path / 'checkpoints/latest/10/state')
  import jax
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def test_a_finished_run_extends_to_more_steps_and_equals_the_longer_run(tmp_path, capsys):
  """--config.train.num_steps may grow on a finished run: it trains on from its last
  checkpoint (with a constant schedule the result equals a run made that long at once);
  the shorter run's results stay beside it; fewer steps, or any other change, is refused."""
  import json
  from affectjax import main as main_lib
  base = ['--config.train.eval_every=6', '--config.train.log_every=3',
          '--config.train.batch_size=16', '--config.train.eval_batch_size=32',
          '--config.data.num_train=128', '--config.data.num_valid=32',
          '--config.data.num_test=32', '--config.optim.schedule=constant']

  def run(workdir, steps, *extra):
    return main_lib.main(['train', '--config', config_path('synthetic.py:tfn'), '--workdir',
                          str(workdir), f'--config.train.num_steps={steps}', *base, *extra])
  assert run(tmp_path / 'grown', 12) == 0
  assert run(tmp_path / 'grown', 18) == 0
  assert run(tmp_path / 'once', 18) == 0
  grown = json.loads((tmp_path / 'grown' / 'results.json').read_text())
  once = json.loads((tmp_path / 'once' / 'results.json').read_text())
  assert grown['test'] == once['test'] and grown['best_step'] == once['best_step']
  assert grown['timing']['steps_this_invocation'] == 6
  short = json.loads((tmp_path / 'grown' / 'results_12_steps.json').read_text())
  assert short['timing']['steps_this_invocation'] == 12
  steps = [json.loads(l)['step'] for l in
           (tmp_path / 'grown' / 'metrics.jsonl').read_text().splitlines()]
  assert steps == [6, 12, 18]
  assert json.loads((tmp_path / 'grown' / 'config.json').read_text())['train'][
      'num_steps'] == 18
  capsys.readouterr()
  assert run(tmp_path / 'grown', 12) == 2
  assert 'can be extended (more steps), not shortened' in capsys.readouterr().err
  assert run(tmp_path / 'grown', 24, '--config.seed=1') == 2
  assert 'first difference: seed' in capsys.readouterr().err
