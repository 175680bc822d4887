r"""Early fusion (concatenate, MLP) on the synthetic interaction benchmark.

  affectjax train --config configs/synthetic_early.py --workdir /tmp/affectjax/early

Variants after a colon as in synthetic_tfn.py.
"""

import ml_collections

from affectjax import config as config_lib
from affectjax.data import synthetic


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name='tensor_fusion.EarlyFusion',
      mlp_hidden=(128, 128),
      dropout=0.1,
      dtype='float32',
  ))
  return synthetic.configure(c, arg).lock()
