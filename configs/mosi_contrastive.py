r"""Contrastive pretraining of text, audio and video towers on CMU-MOSI utterances:
symmetric InfoNCE between every pair of modalities over the global batch, training
videos only and no labels.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/mosi_contrastive.py --workdir /tmp/affectjax/mosi_contrastive

then train the fusion model from the towers with configs/mosi_towers.py (whose towers
must equal these; tests/test_config.py checks it):
  affectjax train --config configs/mosi_towers.py:finetune --config.init.workdir=/tmp/affectjax/mosi_contrastive --workdir /tmp/affectjax/mosi_towers_ft

Variants after a colon, comma-separated: sigmoid (the SigLIP loss), a modality subset
(t, a, v, ta, tv, av, tav), contextual, smoke. The checkpoint is chosen on validation
retrieval (mean R@1 over the six directions; label-free).
"""

import common
import ml_collections

from affectjax import config as config_lib


def get_config(arg=None):
  v = common.variants(arg, flags=('sigmoid', 'contextual', 'smoke'),
                      subset=('tav', *common.subsets('tav')[:-1]))
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.ContrastiveModel',
      'towers': {m: {'kind': 'mlp', 'width': 64, 'num_layers': 2, 'dropout': 0.2}
                 for m in ('text', 'audio', 'vision')},
      'embed_dim': 64,
      # CLIP starts at temperature 0.07; SigLIP at scale 10, bias -10.
      'init_scale': 10.0 if v.sigmoid else 1 / 0.07,
      'init_bias': -10.0,
      'dtype': 'float32',
  })
  c.data = ml_collections.ConfigDict({
      'name': 'mosi',
      'dir': '',  # Else $AFFECTJAX_DATA_DIR.
      'source': 'poria',  # poria | mmsa
      'file': '',  # MMSA pickle, relative to the data dir (source=mmsa).
      'mode': 'contextual' if v.contextual else 'utterance',
      'modalities': common.modalities(v.subset),
      'tfds_dir': '',  # Prepared TFDS data; default ~/.cache/affectjax/tfds.
  })
  c.task = ml_collections.ConfigDict({
      'name': 'contrastive',
      'loss': 'sigmoid' if v.sigmoid else 'infonce',
      'lean': True,  # shard_map form: per-device logits are local x global rows.
      'knn_k': 20,  # Validation k-NN probe.
      'probe_l2': 1e-2,  # Validation linear probe.
  })
  c.train.update(batch_size=32, eval_batch_size=128, num_steps=600, eval_every=50,
                 log_every=50, select_metric='mean_r1', select_mode='max')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=0,
                 weight_decay=1e-4)
  if v.smoke:
    c.train.update(num_steps=20, eval_every=10, log_every=5)
  return c.lock()
