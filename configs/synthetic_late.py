r"""Late fusion (one predictor per modality, outputs averaged) on the synthetic
interaction benchmark. Being additive, it cannot solve the synergy variant.

  affectjax train --config configs/synthetic_late.py --workdir /tmp/affectjax/late

Variants after a colon as in synthetic_tfn.py.
"""

import ml_collections

from affectjax import config as config_lib
from affectjax.data import synthetic


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name='tensor_fusion.LateFusion',
      mlp_hidden=(64, 64),
      dropout=0.1,
      dtype='float32',
  ))
  return synthetic.configure(c, arg).lock()
