r"""LMF (Liu et al., 2018) on the synthetic interaction benchmark.

  affectjax train --config configs/synthetic_lmf.py --workdir /tmp/affectjax/lmf

Variants after a colon as in synthetic_tfn.py; the rank is `--config.model.rank=R`.
"""

import ml_collections

from affectjax import config as config_lib
from affectjax.data import synthetic


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name='tensor_fusion.LMF',
      hidden=dict(text=16, audio=16, vision=16),
      dropouts=dict(text=0.1, audio=0.1, vision=0.1),
      subnet_depth=2,
      lstm_out=dict(),  # e.g. {'text': 32}: LSTM text subnetwork for sequence features.
      rank=8,
      fusion_dim=64,
      dtype='float32',
  ))
  return synthetic.configure(c, arg).lock()
