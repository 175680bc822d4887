import jax
import numpy as np
import pytest

from affectjax import config as config_lib
from affectjax import sharding
from conftest import config_path, train_losses


@pytest.mark.parametrize('name', ['synthetic.py:tfn', 'synthetic.py:lmf'])
def test_one_device_equals_4x2_mesh(name):
  config = config_lib.load(config_path(name) + ',smoke')
  single, _ = train_losses(config, (1, 1), 16, 6)
  sharded, state = train_losses(config, (4, 2), 16, 6)
  np.testing.assert_allclose(single, sharded, rtol=2e-5, atol=1e-6)
  # The fusion weights really are split over the model axis.
  params = state.params
  kernel = params['post_fusion_1']['kernel'] if 'TFN' in config.model.name else (
      params['text_factor'])
  assert kernel.sharding.spec[-1] == 'model'
  assert {s.data.shape[-1] for s in kernel.addressable_shards} == {kernel.shape[-1] // 2}


def test_mesh_shape_resolution():
  assert sharding.mesh_shape({'data': -1, 'model': 2}, 8) == (4, 1, 2)
  assert sharding.mesh_shape({'data': 2, 'model': -1}, 8) == (2, 1, 4)
  assert sharding.mesh_shape({'data': 1, 'fsdp': -1, 'model': 2}, 8) == (1, 4, 2)
  with pytest.raises(ValueError, match='do not divide'):
    sharding.mesh_shape({'data': -1, 'model': 3}, 8)
  with pytest.raises(ValueError, match='uses 4 of 8'):
    sharding.mesh_shape({'data': 2, 'model': 2}, 8)


def test_config_rules_take_precedence():
  config = config_lib.load(config_path('synthetic.py:tfn'), ["mesh.rules=(('mlp', None),)"])
  rules = sharding.axis_rules(config)
  assert rules[0] == ('mlp', None) and ('mlp', 'model') in rules


def test_fsdp_adds_its_axis_to_the_largest_dimension_it_divides():
  mesh = sharding.make_mesh({'data': 1, 'fsdp': 4, 'model': 2})
  P = jax.sharding.PartitionSpec
  # The flattened TFN outer product (33 * 17 * 25) is odd: the model-split side takes it.
  assert sharding.fsdp_spec((14025, 128), P(None, 'model'), mesh) == P(None, ('model', 'fsdp'))
  assert sharding.fsdp_spec((32, 48), P(), mesh) == P(None, 'fsdp')
  assert sharding.fsdp_spec((13, 7), P(), mesh) == P()  # Nothing divides: replicated.
  assert sharding.fsdp_spec((), P(), mesh) == P()


@pytest.mark.parametrize('name, mesh', [('synthetic.py:tfn,smoke', (1, 4, 2)),
                                        ('ravdess_audiomae.py:fold1,smoke', (2, 4, 1))])
def test_fsdp_mesh_trains_like_one_device_with_state_split_over_it(name, mesh):
  """1 device vs 8 with parameters and optimizer state fully sharded: the same losses;
  every large array is really split over `fsdp`, its Adam moments alike."""
  config = config_lib.load(config_path(name))
  single, _ = train_losses(config, (1, 1), 16, 4)
  sharded, state = train_losses(config, mesh, 16, 4)
  np.testing.assert_allclose(single, sharded, rtol=2e-5, atol=1e-6)
  big = [x for x in jax.tree.leaves(state.params) if x.size >= 4096]
  assert big and all('fsdp' in jax.tree.leaves(tuple(x.sharding.spec)) for x in big)
  for x in big:
    assert {s.data.size for s in x.addressable_shards} <= {x.size // mesh[1],
                                                           x.size // (mesh[1] * mesh[2])}
  moments = [x for x in jax.tree.leaves(state.opt_state) if getattr(x, 'size', 0) >= 4096]
  assert moments and all('fsdp' in jax.tree.leaves(tuple(x.sharding.spec)) for x in moments)
