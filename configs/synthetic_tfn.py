r"""TFN (Zadeh et al., 2017) on the synthetic interaction benchmark.

The README's main job:
  affectjax train --config configs/synthetic_tfn.py --workdir /tmp/affectjax/tfn

Variants after a colon, comma-separated: redundant | unique | synergy (default),
regression, smoke. For example:
  affectjax train --config configs/synthetic_tfn.py:unique,smoke --workdir /tmp/t
"""

import ml_collections

from affectjax import config as config_lib
from affectjax.data import synthetic


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name='tensor_fusion.TFN',
      hidden=dict(text=16, audio=16, vision=16),
      dropouts=dict(text=0.1, audio=0.1, vision=0.1),
      subnet_depth=2,
      lstm_out=dict(),  # e.g. {'text': 32}: LSTM text subnetwork for sequence features.
      post_fusion_dim=64,
      post_fusion_dropout=0.2,
      output_range=0.0,  # 6.0: sigmoid-scaled output in [-3, 3], as in the TFN paper.
      dtype='float32',
  ))
  return synthetic.configure(c, arg).lock()
