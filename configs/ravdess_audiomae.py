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


import common
import ml_collections

from affectjax import config as config_lib
from affectjax.models import mae

SIZES = ('tiny', *[s for s in mae.SIZES if s != 'tiny'])  # tiny when none is given.


def get_config(arg=None):
  v = common.variants(arg, flags=('smoke',), folds=6, size=SIZES)
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict({
      'name': 'mae.AudioMAE',
      'size': v.size,  # Width, depth and heads of encoder and decoder: mae.SIZES.
      'patch': (4, 16),  # 4 frames x 16 mel bands.
      'mask_ratio': 0.8,
      'norm_targets': True,  # Reconstruct per-patch normalised values.
      'mlp_ratio': 4,
      'dropout': 0.0,
      'mask_field': 'frame_mask',
      'dtype': 'float32',
  })
  c.data = ml_collections.ConfigDict({
      'name': 'ravdess',
      'dir': '',  # Else $AFFECTJAX_DATA_DIR.
      'modalities': ('audio',),
      'fold': v.fold,
      'num_valid': 4,  # Validation actors: the whole next fold.
      'unlabelled': ('emodb',),  # Every EmoDB clip, unlabelled (EmoDB is then transductive).
      'max_seconds': 1.0 if v.smoke else 4.0,
      'top_db': 40.0,  # Leading and trailing silence trimmed below this.
      'window_ms': 25.0,
      'hop_ms': 20.0,  # 50 frames/s: about 200 frames per trimmed clip.
      'n_mels': 64,
      'audio_norm': 'train',  # Per band over the training actors: level and shape stay.
      'encoder': '',  # '' = log-mel frames.
      'encoder_mode': 'frozen',
      'encoder_pool': 4,
      'encoder_pad_seconds': 0.0,
      'encoder_norm': 'none',
  })
  c.task = ml_collections.ConfigDict({'name': 'masked_reconstruction', 'loss': 'mse'})
  c.train.update(batch_size=32, eval_batch_size=64, num_steps=600, eval_every=50,
                 log_every=50, select_metric='loss', select_mode='min')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=100,
                 weight_decay=0.05)
  if v.smoke:
    c.train.update(num_steps=4, eval_every=2, log_every=2, batch_size=16,
                   eval_batch_size=128)
    c.optim.warmup_steps = 1
  return c.lock()
