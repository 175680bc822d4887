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

from common import mae_size, mae_sizes, ravdess_speech_training, split_variants

from affectjax import config as config_lib
from affectjax import models
from affectjax.data import ravdess


def get_config(arg=None):
  own, data_arg = split_variants(arg, ('finetune', 'fullrate', 'probe', *mae_sizes()))
  c = config_lib.base_config()
  c.model = models.default_config('mae.MAEClassifier')
  c.model.size = mae_size(own)
  c.model.time_mask, c.model.freq_mask = 0.2, 0.25
  ravdess.configure(c, data_arg)
  c.data.num_valid = 4
  c.data.audio_norm = 'train'  # Per band over the training actors: level and shape stay.
  ravdess_speech_training(c, data_arg.split(','))
  if 'fullrate' in own and 'finetune' not in own:
    raise ValueError("variant fullrate sets the fine-tuned encoder's rate: use finetune,fullrate")
  if 'finetune' in own or 'probe' in own:
    c.init.checkpoint = 'best'
    c.init.map = (('encoder', 'encoder'),)  # The head is new; the decoder is unused.
    rate = 0.0 if 'probe' in own else 1.0 if 'fullrate' in own else 0.1
    c.optim.groups = (('encoder/.*', rate),)
  return c.lock()
