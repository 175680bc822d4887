r"""SpeechSSM: frame-level speech emotion recognition on RAVDESS speech (8 emotions,
log-mel frames computed in the input pipeline, speaker-independent actor folds).

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/ravdess_ssm.py:fold1 --workdir /tmp/affectjax/ravdess_ssm_fold1

Variants after a colon, comma-separated: fold1 .. fold6 (test actors from
ravdess/actor_folds.json), smoke. The checkpoint is chosen on validation accuracy
(two actors of the next fold). experiments/ssm/run.py also scores it on EmoDB's
shared emotions.

Time on 2 cores of Intel(R) Xeon(R) Processor, measured by
experiments/benchmarks/config_times.py: a training step of 32 clips takes 0.41 s, an
evaluation with its checkpoint 7 s, compiling 13 s, so the default 600 steps (evaluated
every 50) take about 6 min per fold.
"""

from common import ravdess_speech_training, variants

from affectjax import config as config_lib
from affectjax import models
from affectjax.data import ravdess


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = models.default_config('ssm.SpeechSSM')
  ravdess.configure(c, arg)
  ravdess_speech_training(c, variants(arg))
  return c.lock()
