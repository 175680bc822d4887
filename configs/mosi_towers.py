r"""Sentiment regression on CMU-MOSI from the text, audio and video towers of
configs/mosi_contrastive.py, concatenated into a fusion head (one GELU layer of 64):
trained from scratch, or started from a pretraining run.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/mosi_towers.py --workdir /tmp/affectjax/mosi_towers
  affectjax train --config configs/mosi_towers.py:finetune --config.init.workdir=/tmp/affectjax/mosi_contrastive --workdir /tmp/affectjax/mosi_towers_ft

Variants after a colon, comma-separated: finetune (load `towers` from
config.init.workdir's best checkpoint; they train at 0.1x the head's rate), probe (load
and freeze them), smoke. L1 loss; the checkpoint is chosen on validation MAE.
"""

from common import mosi_towers, mosi_training, split_variants, variants

import ml_collections

from affectjax import config as config_lib
from affectjax.data import mosi


def get_config(arg=None):
  own, data_arg = split_variants(arg, ('finetune', 'probe'))
  c = config_lib.base_config()
  mosi.configure(c, data_arg)
  mosi_training(c, variants(data_arg))
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.Classifier',
      'towers': mosi_towers(),
      'hidden': 64,
      'dropout': 0.2,
      'dtype': 'float32',
  })
  if 'finetune' in own or 'probe' in own:
    c.init.map = (('towers', 'towers'),)
    c.optim.groups = (('towers/.*', 0.0 if 'probe' in own else 0.1),)
  return c.lock()
