"""Tests run on the CPU with 8 virtual devices, so a 4x2 mesh really shards."""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_path(name: str) -> str:
  return os.path.join(REPO, 'configs', name)


@pytest.fixture
def tiny_overrides():
  """Overrides that shrink a synthetic config to a couple of seconds."""
  return ['train.num_steps=12', 'train.eval_every=6', 'train.log_every=3',
          'train.batch_size=16', 'train.eval_batch_size=32', 'data.num_train=256',
          'data.num_valid=40', 'data.num_test=72']
