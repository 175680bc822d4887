r"""Broad-Mamba-style model on IEMOCAP (bidirectional selective SSM context, broad-learning
expansion, probability-guided fusion over the modalities present).

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/iemocap_broadmamba.py --workdir /tmp/affectjax/iemocap_broadmamba

Text is frozen all-MiniLM-L6-v2 sentence embeddings (computed once into the feature
cache). Variants after a colon, comma-separated: finetune, a corpus (iemocap,
iemocap_features, meld, meld_features, emorynlp), sentiment (MELD), a modality subset
(t, ta, tav: features pickles only), smoke. The checkpoint is chosen on validation
weighted F1.
"""

from common import erc_training, variants

from affectjax import config as config_lib
from affectjax import models
from affectjax.data import erc


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = models.default_config('ssm.BroadMamba')
  erc.configure(c, arg, corpus='iemocap')
  erc_training(c, variants(arg))
  return c.lock()
