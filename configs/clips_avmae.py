r"""Audio-visual masked autoencoder (HiCMAE-style) on a folder of clips, without labels:
face tubelets (90% tube masking) and log-mel patches (80% random masking), a cross-modal
fusion encoder, decoders with hierarchical skip connections, and the hierarchical
cross-modal InfoNCE at intermediate encoder layers (weight 0.1, temperature 0.07, as in
Sun et al. 2024).

  affectjax train --config configs/clips_avmae.py:ravdess,fold1 --workdir /tmp/affectjax/avmae_fold1
  affectjax train --config configs/clips_avmae.py:videos,smoke --workdir /tmp/affectjax/avmae_demo

Variants after a colon, comma-separated: ravdess (default) | cremad | videos (the corpus,
as in configs/clips_videomae.py); fold1 .. fold<n>; tiny (default; its 2-layer decoders
get one skip connection and one contrastive level) | small | base | large; smoke.
Fine-tune with configs/clips_mae_classifier.py:av,finetune.
"""

from common import (CLIP_CORPORA, clips_data, mae_size, mae_sizes, mae_training,
                    split_variants)

import ml_collections

from affectjax import config as config_lib
from affectjax import models


def get_config(arg=None):
  own, data_arg = split_variants(arg, (*CLIP_CORPORA, *mae_sizes()))
  c = config_lib.base_config()
  c.model = models.default_config('mae.AudioVisualMAE')
  c.model.size = mae_size(own)
  if c.model.size == 'tiny':
    c.model.decoder_depth, c.model.fusion_depth = 2, 1
  clips_data(c, own, data_arg)
  c.data.modalities = ('audio', 'video')
  mae_training(c, data_arg.split(','), demo='videos' in own)
  c.task = ml_collections.ConfigDict({'name': 'masked_reconstruction', 'loss': 'mse',
                                      'contrastive_weight': 0.1, 'temperature': 0.07})
  return c.lock()
