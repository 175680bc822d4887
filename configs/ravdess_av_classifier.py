r"""Emotion classification (8 classes) on RAVDESS from the audio and face towers of
configs/ravdess_contrastive.py: trained from scratch, or started from a pretraining run.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/ravdess_av_classifier.py:fold1 --workdir /tmp/affectjax/ravdess_scratch_fold1
  affectjax train --config configs/ravdess_av_classifier.py:fold1,finetune --config.init.workdir=/tmp/affectjax/ravdess_contrastive_fold1 --workdir /tmp/affectjax/ravdess_ft_fold1

Variants after a colon, comma-separated: fold1 .. fold6; finetune (load `towers` from
config.init.workdir's best checkpoint; the towers train at 0.1x the head's rate), probe
(load them and freeze them: a linear probe); audio or face (that tower alone); whisper
(the audio tower reads frozen whisper-base features: configs/ravdess_whisper.py's encoder,
so a whisper contrastive run fine-tunes here); smoke.
Selection: validation UAR (4 held-out training actors).

Time on 2 cores of Intel(R) Xeon(R) Processor, measured by
experiments/benchmarks/config_times.py: a training step of 64 clips takes 0.06 s, an
evaluation with its checkpoint 3 s, compiling 7 s, so the default 1000 steps (evaluated
every 100) take about 2 min per fold.
"""

from common import ravdess_av_towers, ravdess_av_train, split_variants, whisper_audio

import ml_collections

from affectjax import config as config_lib
from affectjax.data import ravdess_av


def get_config(arg=None):
  own, data_arg = split_variants(arg, ('finetune', 'probe', 'audio', 'face', 'whisper'))
  c = config_lib.base_config()
  ravdess_av.configure(c, data_arg)
  if 'whisper' in own:
    whisper_audio(c, 'smoke' in data_arg.split(','))
  if 'audio' in own or 'face' in own:
    c.data.modalities = tuple(m for m in ('audio', 'face') if m in own)
  c.task = ml_collections.ConfigDict({
      'name': 'classification', 'num_classes': 8, 'loss': 'cross_entropy',
      'metrics': 'classification'})
  towers = ravdess_av_towers('whisper' in own)
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.Classifier',
      'towers': {m: towers[m] for m in c.data.modalities},
      'hidden': 0,  # A linear head on the concatenated tower features.
      'dropout': 0.1,
      'dtype': 'float32',
  })
  ravdess_av_train(c, 'smoke' in data_arg.split(','))
  c.train.select_metric, c.train.select_mode = 'uar', 'max'
  if 'smoke' not in data_arg.split(','):
    c.train.eval_every = 100
  if 'finetune' in own or 'probe' in own:
    c.init.checkpoint = 'best'
    c.init.map = (('towers', 'towers'),)  # The head is new; the rest of the run is unused.
    c.optim.groups = (('towers/.*', 0.0 if 'probe' in own else 0.1),)
  return c.lock()
