r"""Late fusion on CMU-MOSI (Poria et al. 2017 utterance features and split).

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/mosi_late.py --workdir /tmp/affectjax/mosi_late

Variants after a colon, comma-separated: a modality subset (t, a, v, ta, tv, av, tav),
contextual, smoke. Sentiment regression with an L1 loss; the checkpoint is chosen on
validation MAE.
"""

import ml_collections

from affectjax import config as config_lib
from affectjax.data import mosi


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict(dict(
      name='tensor_fusion.LateFusion',
      mlp_hidden=(64, 64),
      dropout=0.1,
      dtype='float32',
  ))
  return mosi.configure(c, arg).lock()
