r"""Audio masked autoencoder (AudioMAE-style) pretrained on log-mel spectrograms of the
fold's 16 RAVDESS training actors' speech plus every EmoDB clip, without labels (the
fold's test actors are never seen; validation = the next fold's 4 actors).

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/ravdess_audiomae.py:fold1 --workdir /tmp/affectjax/ravdess_audio_mae_fold1

then fine-tune the encoder with configs/ravdess_audiomae_classifier.py:
  affectjax train --config configs/ravdess_audiomae_classifier.py:fold1,finetune --config.init.workdir=/tmp/affectjax/ravdess_audio_mae_fold1 --workdir /tmp/affectjax/ravdess_audio_mae_ft_fold1

Variants after a colon, comma-separated: fold1 .. fold6 (test actors; never seen in
pretraining), tiny (default) | small | base | large (model.size), smoke. 80% of the
(4 frames x 16 mel bands) patches of each clip are hidden; the checkpoint is chosen on
the validation actors' reconstruction error of hidden patches (per-patch normalised).

Time on 2 cores of Intel(R) Xeon(R) Processor, measured by
experiments/benchmarks/config_times.py: a training step of 32 clips takes 0.30 s, an
evaluation with its checkpoint 9 s, compiling 5 s, so the default 600 steps (evaluated
every 50) take about 5 min per fold.
"""

from common import mae_size, mae_sizes, ravdess_speech_training, split_variants

import ml_collections

from affectjax import config as config_lib
from affectjax import models
from affectjax.data import ravdess


def get_config(arg=None):
  own, data_arg = split_variants(arg, mae_sizes())
  c = config_lib.base_config()
  c.model = models.default_config('mae.AudioMAE')
  c.model.size = mae_size(own)
  ravdess.configure(c, data_arg)
  c.data.num_valid, c.data.unlabelled = 4, ('emodb',)
  c.data.audio_norm = 'train'  # Per band over the training actors: level and shape stay.
  ravdess_speech_training(c, data_arg.split(','))
  c.task = ml_collections.ConfigDict({'name': 'masked_reconstruction',
                                                 'loss': 'mse'})
  c.train.select_metric, c.train.select_mode = 'loss', 'min'
  return c.lock()
