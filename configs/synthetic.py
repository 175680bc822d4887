r"""The synthetic benchmark (three modalities whose label needs one, two or all three of
them; affectjax/data/synthetic.py): tensor fusion against low-rank, early and late
fusion under one training setting.

  affectjax train --config configs/synthetic.py:tfn --workdir /tmp/affectjax/synthetic_tfn

Variants after a colon, comma-separated: the model (tfn | lmf | early | late; tfn when
none), the data (synergy | redundant | unique; synergy when none), regression (targets
instead of two classes; MSE, chosen on validation MSE), smoke (small splits, 40 steps).
"""

import common
import ml_collections

from affectjax import config as config_lib

# The four fusion models, every field stated (dims: text 32, audio 16, vision 24 values).
MODELS = {
    'tfn': {'name': 'tensor_fusion.TFN',
            'hidden': {'text': 16, 'audio': 16, 'vision': 16},  # Per-modality sub-networks,
            'dropouts': {'text': 0.1, 'audio': 0.1, 'vision': 0.1},
            'subnet_depth': 2, 'lstm_out': {},  # feature vectors: no LSTM.
            'post_fusion_dim': 64, 'post_fusion_dropout': 0.2, 'output_range': 0.0,
            'dropout_rng_bits': 32, 'dtype': 'float32'},
    'lmf': {'name': 'tensor_fusion.LMF',
            'hidden': {'text': 16, 'audio': 16, 'vision': 16},
            'dropouts': {'text': 0.1, 'audio': 0.1, 'vision': 0.1},
            'subnet_depth': 2, 'lstm_out': {},
            'rank': 8, 'fusion_dim': 64, 'dropout_rng_bits': 32, 'dtype': 'float32'},
    'early': {'name': 'tensor_fusion.EarlyFusion', 'mlp_hidden': (128, 128), 'dropout': 0.1,
              'dtype': 'float32'},
    'late': {'name': 'tensor_fusion.LateFusion', 'mlp_hidden': (64, 64), 'dropout': 0.1,
             'dtype': 'float32'},
}


def get_config(arg=None):
  v = common.variants(arg, flags=('regression', 'smoke'), model=tuple(MODELS),
                      variant=('synergy', 'redundant', 'unique'))
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict(MODELS[v.model])
  c.data = ml_collections.ConfigDict({
      'name': 'synthetic',
      'dir': '',
      'variant': v.variant,  # Which modalities the label needs.
      'modalities': ('text', 'audio', 'vision'),
      'dims': (32, 16, 24),
      'num_train': 32768, 'num_valid': 1024, 'num_test': 2048,
      'noise': 1.0,
      'seed': 1234,  # Of the generated data, not of training.
      'unique_modality': 0,  # 'unique': the modality that carries the label.
  })
  c.task = ml_collections.ConfigDict({
      'name': 'classification', 'num_classes': 2, 'loss': 'cross_entropy',
      'metrics': 'classification'})
  c.train.update(batch_size=128, eval_batch_size=256, num_steps=3000, eval_every=500,
                 log_every=50, select_metric='accuracy', select_mode='max')
  c.optim.update(name='adamw', learning_rate=2e-3, schedule='cosine', warmup_steps=0,
                 weight_decay=1e-4)
  if v.regression:
    c.task.update(name='regression', loss='mse', metrics='regression')
    c.train.update(select_metric='mse', select_mode='min')
  if v.smoke:
    c.data.update(num_train=512, num_valid=128, num_test=128)
    c.train.update(num_steps=40, eval_every=20, log_every=10, batch_size=32,
                   eval_batch_size=64)
  return c.lock()
