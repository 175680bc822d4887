r"""Emotion classification on a folder of labelled clips with the masked autoencoders'
encoders: from scratch, or started from a pretraining run of configs/clips_mae.py (or, for audio, configs/ravdess_audiomae.py).

  affectjax train --config configs/clips_mae_classifier.py:ravdess,fold1,av,finetune --config.init.workdir=/tmp/affectjax/avmae_fold1 --workdir /tmp/affectjax/avmae_ft_fold1

Variants after a colon, comma-separated: av (default: audio and video, the fusion
encoder, pooled tokens of both into the head) | video | audio; finetune (load the
encoders, and the fusion encoder for av, from config.init.workdir's best checkpoint; they
train at 0.1x the head's rate) | probe (load and freeze them); ravdess (default) | cremad;
fold1 .. fold<n>; tiny (default) | small | base | large; smoke.
Selection: validation accuracy (the fold after the test fold; no test speaker in training).
"""

import common
import ml_collections

from affectjax import config as config_lib
from affectjax.models import mae

SIZES = ('tiny', *[s for s in mae.SIZES if s != 'tiny'])  # tiny when none is given.

STREAMS = {'av': ('audio', 'video'), 'video': ('video',), 'audio': ('audio',)}


def get_config(arg=None):
  v = common.variants(arg, flags=('smoke',), folds=6, streams=tuple(STREAMS),
                      start=('scratch', 'finetune', 'probe'), corpus=('ravdess', 'cremad'),
                      size=SIZES)
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict({
      'name': 'mae.MAEClassifier',
      'size': v.size,  # As the pretraining run's encoders.
      'patch': (4, 16),
      'tubelet': (2, 16, 16),
      # As configs/clips_mae.py's tiny model; 2: the size's default.
      'fusion_depth': 1 if v.size == 'tiny' else 2,
      'mlp_ratio': 4,
      'dropout': 0.0,
      'head_dropout': 0.0,
      'pool': 'mean',
      'time_mask': 0.0,  # No fine-tuning masking of log-mel patches here.
      'freq_mask': 0.0,
      'mask_field': 'frame_mask',
      'dtype': 'float32',
  })
  folder, labels, num_folds, split = common.CLIP_CORPORA[v.corpus]
  c.data = ml_collections.ConfigDict({
      'name': 'clips',
      'dir': '',  # Else $AFFECTJAX_DATA_DIR.
      'input': folder,  # Relative to the data directory, or absolute.
      'labels': labels,  # ravdess | crema-d | none | a CSV file (affectjax/data/labels.py).
      'modalities': STREAMS[v.streams],
      'split': split,  # folds (by speaker) | all (every clip in every split: a demo).
      'num_folds': num_folds,
      'fold': v.fold,
      'repeat': 4 if split == 'all' else 1,  # 'all': 2 clips x 4, one example per device.
      'num_frames': 8 if v.smoke else 16,  # HiCMAE's 16 frames,
      'size': 32 if v.smoke else 160,  # of 160 x 160 face crops,
      'face': True,  # found by the face detector,
      'face_margin': 1.3,  # with this margin around the box.
      'max_seconds': 1.0 if v.smoke else 4.0,
      'window_ms': 25.0,
      'hop_ms': 20.0,
      'n_mels': 64,
      'skip_bad': False,  # True: leave out clips that fail to decode (counted).
      'tfds_dir': '',  # Where the built dataset goes; default ~/.cache/affectjax/tfds.
  })
  c.task = ml_collections.ConfigDict({
      'name': 'classification', 'num_classes': {'ravdess': 8, 'crema-d': 6}[labels],
      'loss': 'cross_entropy', 'metrics': 'classification'})
  c.train.update(batch_size=32, eval_batch_size=64, num_steps=600, eval_every=200,
                 log_every=50, select_metric='accuracy', select_mode='max')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=100,
                 weight_decay=0.05)
  if v.start != 'scratch':
    c.init.checkpoint = 'best'
    loaded = ('encoder',) if v.streams != 'av' else ('audio_encoder', 'video_encoder',
                                                     'fusion')
    c.init.map = tuple((k, k) for k in loaded)  # The head is new; the decoders are unused.
    c.optim.groups = tuple((f'{k}/.*', 0.0 if v.start == 'probe' else 0.1) for k in loaded)
  if v.smoke:  # One evaluation, so one checkpoint: this is for tests.
    c.train.update(num_steps=2, eval_every=2, log_every=1, batch_size=8, eval_batch_size=8)
    c.optim.warmup_steps = 1
  return c.lock()
