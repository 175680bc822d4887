r"""TFN (Zadeh et al., 2017) on the synthetic interaction benchmark.

The README's main job:
  affectjax train --config configs/synthetic_tfn.py --workdir /tmp/affectjax/tfn

Variants after a colon, comma-separated: redundant | unique | synergy (default),
regression, smoke. For example:
  affectjax train --config configs/synthetic_tfn.py:unique,smoke --workdir /tmp/t
"""

from common import synthetic_training, variants

from affectjax import config as config_lib
from affectjax import models
from affectjax.data import synthetic


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = models.default_config('tensor_fusion.TFN')
  synthetic.configure(c, arg)
  synthetic_training(c, variants(arg))
  return c.lock()
