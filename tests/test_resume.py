"""A NaN loss stops cleanly with the last good checkpoint (kills: test_crash_safety)."""

import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from affectjax import config as config_lib
from affectjax import train
from affectjax.data import pipeline
from conftest import config_path

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
