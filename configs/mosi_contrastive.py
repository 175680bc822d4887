r"""Contrastive pretraining of text, audio and video towers on CMU-MOSI utterances:
symmetric InfoNCE between every pair of modalities over the global batch, training
videos only and no labels.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/mosi_contrastive.py --workdir /tmp/affectjax/mosi_contrastive

then train the fusion model from the towers with configs/mosi_towers.py:
  affectjax train --config configs/mosi_towers.py:finetune --config.init.workdir=/tmp/affectjax/mosi_contrastive --workdir /tmp/affectjax/mosi_towers_ft

Variants after a colon, comma-separated: sigmoid (the SigLIP loss), smoke. The checkpoint
is chosen on validation retrieval (mean R@1 over the six directions; label-free).
"""

from common import mosi_towers, mosi_training, split_variants, variants

import ml_collections

from affectjax import config as config_lib
from affectjax.data import mosi


def get_config(arg=None):
  own, data_arg = split_variants(arg, ('sigmoid',))
  c = config_lib.base_config()
  mosi.configure(c, data_arg)
  mosi_training(c, variants(data_arg))
  sigmoid = 'sigmoid' in own
  c.task = ml_collections.ConfigDict({
      'name': 'contrastive',
      'loss': 'sigmoid' if sigmoid else 'infonce',
      'lean': True,
      'knn_k': 20,
      'probe_l2': 1e-2,
  })
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.ContrastiveModel',
      'towers': mosi_towers(),
      'embed_dim': 64,
      'init_scale': 10.0 if sigmoid else 1 / 0.07,
      'init_bias': -10.0,
      'dtype': 'float32',
  })
  c.train.select_metric, c.train.select_mode = 'mean_r1', 'max'
  return c.lock()
