r"""Video masked autoencoder (VideoMAE-style) on face crops of a folder of clips, without
labels: 16 frames of 160 x 160, (2, 16, 16) tubelets, 90% tube masking.

  affectjax build-clips --input $AFFECTJAX_DATA_DIR/ravdess/videos --labels ravdess --face
  affectjax train --config configs/clips_videomae.py:ravdess,fold1 --workdir /tmp/affectjax/videomae_fold1

The first command is optional: training builds the same dataset on first use.
Variants after a colon, comma-separated: the corpus, ravdess (default;
<data dir>/ravdess/videos, the Video_Speech_Actor_XX archives' 01-01-*.mp4 files, 6
speaker folds) | cremad (<data dir>/crema-d/VideoFlash, 5 speaker folds) | videos (the two
unlabelled face videos in ../shared/data/videos, every clip in every split: a demo of
the pipeline, not a study); fold1 .. fold<n> (test speakers, never seen in pretraining);
tiny (default) | small | base | large (model.size); smoke.
Fine-tune with configs/clips_mae_classifier.py:video,finetune.
"""

from common import (CLIP_CORPORA, clips_data, mae_size, mae_sizes, mae_training,
                    split_variants)

import ml_collections

from affectjax import config as config_lib
from affectjax import models


def get_config(arg=None):
  own, data_arg = split_variants(arg, (*CLIP_CORPORA, *mae_sizes()))
  c = config_lib.base_config()
  c.model = models.default_config('mae.VideoMAE')
  c.model.size = mae_size(own)
  clips_data(c, own, data_arg)
  c.data.modalities = ('video',)
  mae_training(c, data_arg.split(','), demo='videos' in own)
  c.task = ml_collections.ConfigDict({'name': 'masked_reconstruction', 'loss': 'mse'})
  return c.lock()
