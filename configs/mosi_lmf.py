r"""LMF (Liu et al., 2018) on CMU-MOSI (Poria et al. 2017 utterance features and split).

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/mosi_lmf.py --workdir /tmp/affectjax/mosi_lmf

Variants after a colon, comma-separated: a modality subset (t, a, v, ta, tv, av, tav),
contextual, smoke. Sentiment regression with an L1 loss; the checkpoint is chosen on
validation MAE.
"""

from common import mosi_training, variants

from affectjax import config as config_lib
from affectjax import models
from affectjax.data import mosi


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = models.default_config('tensor_fusion.LMF')
  mosi.configure(c, arg)
  mosi_training(c, variants(arg))
  return c.lock()
