import numpy as np
import pytest

from affectjax import config as config_lib
from affectjax import sharding
from conftest import config_path, train_losses


@pytest.mark.parametrize('name', ['synthetic_tfn.py', 'synthetic_lmf.py'])
def test_one_device_equals_4x2_mesh(name):
  config = config_lib.load(config_path(name) + ':smoke')
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
  assert sharding.mesh_shape({'data': -1, 'model': 2}, 8) == (4, 2)
  assert sharding.mesh_shape({'data': 2, 'model': -1}, 8) == (2, 4)
  with pytest.raises(ValueError, match='do not divide'):
    sharding.mesh_shape({'data': -1, 'model': 3}, 8)
  with pytest.raises(ValueError, match='uses 4 of 8'):
    sharding.mesh_shape({'data': 2, 'model': 2}, 8)


def test_config_rules_take_precedence():
  config = config_lib.load(config_path('synthetic_tfn.py'), ["mesh.rules=(('mlp', None),)"])
  rules = sharding.axis_rules(config)
  assert rules[0] == ('mlp', None) and ('mlp', 'model') in rules
