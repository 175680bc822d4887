r"""LMF (Liu et al., 2018) on the synthetic interaction benchmark.

  affectjax train --config configs/synthetic_lmf.py --workdir /tmp/affectjax/lmf

Variants after a colon as in synthetic_tfn.py; the rank is `--config.model.rank=R`.
"""

from common import synthetic_training, variants

from affectjax import config as config_lib
from affectjax import models
from affectjax.data import synthetic


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = models.default_config('tensor_fusion.LMF')
  synthetic.configure(c, arg)
  synthetic_training(c, variants(arg))
  return c.lock()
