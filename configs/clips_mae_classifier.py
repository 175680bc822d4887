r"""Emotion classification on a folder of labelled clips with the masked autoencoders'
encoders: from scratch, or started from a pretraining run of configs/clips_avmae.py,
configs/clips_videomae.py (or, for audio, configs/ravdess_audiomae.py).

  affectjax train --config configs/clips_mae_classifier.py:ravdess,fold1,av,finetune --config.init.workdir=/tmp/affectjax/avmae_fold1 --workdir /tmp/affectjax/avmae_ft_fold1

Variants after a colon, comma-separated: av (default: audio and video, the fusion
encoder, pooled tokens of both into the head) | video | audio; finetune (load the
encoders, and the fusion encoder for av, from config.init.workdir's best checkpoint; they
train at 0.1x the head's rate) | probe (load and freeze them); ravdess (default) | cremad;
fold1 .. fold<n>; tiny (default) | small | base | large; smoke.
Selection: validation accuracy (the fold after the test fold; no test speaker in training).
"""

from common import (CLIP_CORPORA, clips_data, mae_size, mae_sizes, mae_training,
                    split_variants)

import ml_collections

from affectjax import config as config_lib
from affectjax import models

STREAMS = {'av': ('audio', 'video'), 'video': ('video',), 'audio': ('audio',)}


def get_config(arg=None):
  own, data_arg = split_variants(arg, (*STREAMS, 'finetune', 'probe', *CLIP_CORPORA,
                                       *mae_sizes()))
  c = config_lib.base_config()
  c.model = models.default_config('mae.MAEClassifier')
  c.model.size = mae_size(own)
  streams = [o for o in own if o in STREAMS]
  modalities = STREAMS[streams[-1] if streams else 'av']
  if c.model.size == 'tiny':
    c.model.fusion_depth = 1  # As configs/clips_avmae.py's tiny model.
  clips_data(c, own, data_arg)
  if c.data.labels == 'none':
    raise ValueError('configs/clips_mae_classifier.py: the corpus has no labels (ravdess | '
                     'cremad)')
  c.data.modalities = modalities
  mae_training(c, data_arg.split(','))
  c.task = ml_collections.ConfigDict({'name': 'classification', 'loss': 'cross_entropy',
                                      'metrics': 'classification',
                                      'num_classes': {'ravdess': 8, 'crema-d': 6}[c.data.labels]})
  c.train.select_metric, c.train.select_mode = 'accuracy', 'max'
  c.train.num_steps = 600 if 'smoke' not in data_arg.split(',') else c.train.num_steps
  if 'finetune' in own or 'probe' in own:
    c.init.checkpoint = 'best'
    loaded = ('encoder',) if len(modalities) == 1 else ('audio_encoder', 'video_encoder',
                                                        'fusion')
    c.init.map = tuple((k, k) for k in loaded)  # The head is new; the decoders are unused.
    c.optim.groups = tuple((f'{k}/.*', 0.0 if 'probe' in own else 0.1) for k in loaded)
  return c.lock()
