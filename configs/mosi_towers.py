r"""Sentiment regression on CMU-MOSI from the text, audio and video towers of
configs/mosi_contrastive.py, concatenated into a fusion head (one GELU layer of 64):
trained from scratch, or started from a pretraining run.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/mosi_towers.py --workdir /tmp/affectjax/mosi_towers
  affectjax train --config configs/mosi_towers.py:finetune --config.init.workdir=/tmp/affectjax/mosi_contrastive --workdir /tmp/affectjax/mosi_towers_ft

Variants after a colon, comma-separated: finetune (load `towers` from
config.init.workdir's best checkpoint; they train at 0.1x the head's rate), probe (load
and freeze them), a modality subset (t, a, v, ta, tv, av, tav), contextual, smoke. L1
loss; the checkpoint is chosen on validation MAE.
"""

import common
import ml_collections

from affectjax import config as config_lib


def get_config(arg=None):
  v = common.variants(arg, flags=('contextual', 'smoke'), start=('scratch', 'finetune', 'probe'),
                      subset=('tav', *common.subsets('tav')[:-1]))
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.Classifier',
      # As configs/mosi_contrastive.py's towers, so that init.map loads them one to one.
      'towers': {m: {'kind': 'mlp', 'width': 64, 'num_layers': 2, 'dropout': 0.2}
                 for m in ('text', 'audio', 'vision')},
      'hidden': 64,
      'dropout': 0.2,
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
      'name': 'regression', 'num_classes': 2, 'loss': 'l1', 'metrics': 'sentiment'})
  c.train.update(batch_size=32, eval_batch_size=128, num_steps=600, eval_every=50,
                 log_every=50, select_metric='mae', select_mode='min')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=0,
                 weight_decay=1e-4)
  if v.start != 'scratch':
    c.init.map = (('towers', 'towers'),)
    c.optim.groups = (('towers/.*', 0.0 if v.start == 'probe' else 0.1),)
  if v.smoke:
    c.train.update(num_steps=20, eval_every=10, log_every=5)
  return c.lock()
