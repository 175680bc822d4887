r"""Emotion classification (8 classes) on RAVDESS speech with the encoder of
configs/ravdess_audiomae.py: trained from scratch, or started from a pretraining run.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/ravdess_audiomae_classifier.py:fold1 --workdir /tmp/affectjax/ravdess_audio_mae_scratch_fold1
  affectjax train --config configs/ravdess_audiomae_classifier.py:fold1,finetune --config.init.workdir=/tmp/affectjax/ravdess_audio_mae_fold1 --workdir /tmp/affectjax/ravdess_audio_mae_ft_fold1

Variants after a colon, comma-separated: fold1 .. fold6; finetune (load `encoder` from
config.init.workdir's best checkpoint; it trains at 0.1x the head's rate, or with
`fullrate` at the head's rate), probe (load it and freeze it: a linear probe);
tiny (default) | small | base | large; smoke.
Selection: validation accuracy (4 held-out training actors: the next fold's). Log-mel is
standardised per band with the training actors' statistics (`data.audio_norm='train'`,
as in pretraining; per-clip statistics would erase each clip's level and spectral shape).
In training, 20% of the time rows and 25% of the frequency columns (one of four) of patches
are hidden per clip (AudioMAE's fine-tuning masking; `model.time_mask`, `model.freq_mask`),
from scratch and fine-tuned alike.

Time on 2 cores of Intel(R) Xeon(R) Processor, measured by
experiments/benchmarks/config_times.py: a training step of 32 clips takes 0.19 s, an
evaluation with its checkpoint 15 s, compiling 5 s, so the default 600 steps (evaluated
every 50) take about 5 min per fold.
"""


import common
import ml_collections

from affectjax import config as config_lib
from affectjax.models import mae

SIZES = ('tiny', *[s for s in mae.SIZES if s != 'tiny'])  # tiny when none is given.


def get_config(arg=None):
  v = common.variants(arg, flags=('fullrate', 'smoke'), folds=6,
                      start=('scratch', 'finetune', 'probe'),
                      size=SIZES)
  if v.fullrate and v.start != 'finetune':
    raise ValueError("variant fullrate sets the fine-tuned encoder's rate: use finetune,fullrate")
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict({
      'name': 'mae.MAEClassifier',
      'size': v.size,  # As configs/ravdess_audiomae.py's encoder.
      'patch': (4, 16),
      'tubelet': (2, 16, 16),  # Video only.
      'fusion_depth': 2,  # Audio-visual only.
      'mlp_ratio': 4,
      'dropout': 0.0,
      'head_dropout': 0.0,
      'pool': 'mean',
      'time_mask': 0.2,  # Of the patch rows hidden per training clip,
      'freq_mask': 0.25,  # and of the frequency columns.
      'mask_field': 'frame_mask',
      'dtype': 'float32',
  })
  c.data = ml_collections.ConfigDict({
      'name': 'ravdess',
      'dir': '',  # Else $AFFECTJAX_DATA_DIR.
      'modalities': ('audio',),
      'fold': v.fold,
      'num_valid': 4,  # Validation actors: the whole next fold.
      'unlabelled': (),
      'max_seconds': 1.0 if v.smoke else 4.0,
      'top_db': 40.0,  # Leading and trailing silence trimmed below this.
      'window_ms': 25.0,
      'hop_ms': 20.0,  # 50 frames/s: about 200 frames per trimmed clip.
      'n_mels': 64,
      'audio_norm': 'train',  # Per band over the training actors, as in pretraining.
      'encoder': '',  # '' = log-mel frames.
      'encoder_mode': 'frozen',
      'encoder_pool': 4,
      'encoder_pad_seconds': 0.0,
      'encoder_norm': 'none',
  })
  c.task = ml_collections.ConfigDict({
      'name': 'classification', 'num_classes': 8, 'loss': 'cross_entropy',
      'metrics': 'classification'})
  c.train.update(batch_size=32, eval_batch_size=64, num_steps=600, eval_every=50,
                 log_every=50, select_metric='accuracy', select_mode='max')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=100,
                 weight_decay=0.05)
  if v.start != 'scratch':
    c.init.checkpoint = 'best'
    c.init.map = (('encoder', 'encoder'),)  # The head is new; the decoder is unused.
    rate = 0.0 if v.start == 'probe' else 1.0 if v.fullrate else 0.1
    c.optim.groups = (('encoder/.*', rate),)
  if v.smoke:
    c.train.update(num_steps=4, eval_every=2, log_every=2, batch_size=16,
                   eval_batch_size=128)
    c.optim.warmup_steps = 1
  return c.lock()
