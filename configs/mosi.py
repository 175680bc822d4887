r"""Sentiment on CMU-MOSI (Poria et al. 2017 utterance features and split): tensor fusion
(TFN, Zadeh et al. 2017), low-rank fusion (LMF, Liu et al. 2018), early and late fusion,
and two contextual models over each video's utterance sequence (bc-LSTM; ContextualSSM).
Published binary accuracy of the contextual family: bc-LSTM 80.3, MMMU-BA 82.31.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/mosi.py:tfn --workdir /tmp/affectjax/mosi_tfn

Variants after a colon, comma-separated: the model (tfn | lmf | early | late | bclstm |
ssm; tfn when none), a modality subset (t, a, v, ta, tv, av, tav; all three when none),
contextual (the fusion models read each utterance with its video's context), smoke.
Sentiment regression with an L1 loss; the checkpoint is chosen on validation MAE; Acc-2
is reported both ways (non-0 and has-0).
"""

import common
import ml_collections

from affectjax import config as config_lib

# Every field of each model stated (features: text 100, audio 73, video 100 values).
MODELS = {
    'tfn': {'name': 'tensor_fusion.TFN',
            'hidden': {'text': 16, 'audio': 16, 'vision': 16},  # Per-modality sub-networks,
            'dropouts': {'text': 0.1, 'audio': 0.1, 'vision': 0.1},
            'subnet_depth': 2, 'lstm_out': {},  # feature vectors: no LSTM.
            'post_fusion_dim': 64, 'post_fusion_dropout': 0.2,
            'output_range': 0.0,  # 0: no tanh scaling of the output.
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
    # Contextual: one sequence per video.
    'bclstm': {'name': 'ssm.BcLSTM', 'hidden': 300, 'fusion_hidden': 300, 'dense_size': 100,
               'dropout': 0.5, 'dtype': 'float32'},
    'ssm': {'name': 'ssm.ContextualSSM', 'ssm': 's5', 'width': 64, 'state_size': 0,
            'num_layers': 1, 'fusion': 'ssm', 'fusion_layers': 1, 'dropout': 0.3,
            'dtype': 'float32'},
}


def get_config(arg=None):
  v = common.variants(arg, flags=('contextual', 'smoke'), model=tuple(MODELS),
                      subset=('tav', *common.subsets('tav')[:-1]))
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict(MODELS[v.model])
  c.data = ml_collections.ConfigDict({
      'name': 'mosi',
      'dir': '',  # Else $AFFECTJAX_DATA_DIR.
      'source': 'poria',  # poria | mmsa
      'file': '',  # MMSA pickle, relative to the data dir (source=mmsa).
      # utterance | contextual (each video's utterances as one sequence; always for
      # the contextual models).
      'mode': 'contextual' if v.contextual or v.model in ('bclstm', 'ssm') else 'utterance',
      'modalities': common.modalities(v.subset),
      'tfds_dir': '',  # Prepared TFDS data; default ~/.cache/affectjax/tfds.
  })
  c.task = ml_collections.ConfigDict({
      'name': 'regression', 'num_classes': 2, 'loss': 'l1', 'metrics': 'sentiment'})
  c.train.update(batch_size=32, eval_batch_size=128, num_steps=600, eval_every=50,
                 log_every=50, select_metric='mae', select_mode='min')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=0,
                 weight_decay=1e-4)
  if v.smoke:
    c.train.update(num_steps=20, eval_every=10, log_every=5)
  return c.lock()
