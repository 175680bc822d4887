r"""TFN (Zadeh et al., 2017) on CMU-MOSI (Poria et al. 2017 utterance features and split).

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/mosi_tfn.py --workdir /tmp/affectjax/mosi_tfn

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
  return mosi.configure(c, arg).lock()
