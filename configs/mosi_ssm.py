r"""ContextualSSM: contextual sentiment on CMU-MOSI (videos as utterance sequences; Poria et al. 2017
features and split; published binary accuracy: bc-LSTM 80.3, MMMU-BA 82.31).

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/mosi_ssm.py --workdir /tmp/affectjax/mosi_ssm

Variants after a colon, comma-separated: a modality subset (t, a, v, ta, tv, av, tav),
smoke. Sentiment regression per utterance (L1 loss); the checkpoint is chosen on
validation MAE; Acc-2 is reported both ways (non-0 and has-0).
"""

from common import mosi_training, variants

from affectjax import config as config_lib
from affectjax import models
from affectjax.data import mosi


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = models.default_config('ssm.ContextualSSM')
  mosi.configure(c, ','.join(['contextual', *filter(None, [arg])]))
  mosi_training(c, variants(arg))
  return c.lock()
