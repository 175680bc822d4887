r"""Contrastive pretraining of an audio tower and a face tower on RAVDESS: each clip's
speech (log-mel frames) against its face (35 action units), symmetric InfoNCE over the
global batch, training actors only and no labels.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/ravdess_contrastive.py:fold1 --workdir /tmp/affectjax/ravdess_contrastive_fold1

then fine-tune (or linearly probe) the towers with configs/ravdess_av_classifier.py:
  affectjax train --config configs/ravdess_av_classifier.py:fold1,finetune --config.init.workdir=/tmp/affectjax/ravdess_contrastive_fold1 --workdir /tmp/affectjax/ravdess_ft_fold1

Variants after a colon, comma-separated: fold1 .. fold6 (test actors), sigmoid (the
SigLIP loss instead of InfoNCE), supcon (adds the supervised contrastive loss over
the emotion labels: label-supervised, no longer self-supervised), whisper (the audio
tower starts from frozen whisper-base features instead of log-mel), smoke. The checkpoint
is chosen on validation audio<->face retrieval (mean R@1 over both directions;
label-free). Evaluation also reports k-NN accuracy and a linear probe of each tower
(fitted on the training actors).

Time on 2 cores of Intel(R) Xeon(R) Processor, measured by
experiments/benchmarks/config_times.py: a training step of 64 clips takes 0.09 s, an
evaluation with its checkpoint 5 s, compiling 8 s, so the default 1000 steps (evaluated
every 200) take about 2 min per fold.
"""

from common import ravdess_av_towers, ravdess_av_train, split_variants, whisper_audio

import ml_collections

from affectjax import config as config_lib
from affectjax.data import ravdess_av


def get_config(arg=None):
  own, data_arg = split_variants(arg, ('sigmoid', 'supcon', 'whisper'))
  c = config_lib.base_config()
  ravdess_av.configure(c, data_arg)
  if 'whisper' in own:
    whisper_audio(c, 'smoke' in data_arg.split(','))
  sigmoid = 'sigmoid' in own
  c.task = ml_collections.ConfigDict({
      'name': 'contrastive',
      'loss': 'sigmoid' if sigmoid else 'infonce',
      'lean': True,  # shard_map form: per-device logits are local x global rows.
      'knn_k': 20,
      'probe_l2': 1e-2,
      # supcon: also pull together same-emotion clips (uses the labels; not self-supervised).
      'supcon_weight': 1.0 if 'supcon' in own else 0.0,
      'supcon_temperature': 0.1,
  })
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.ContrastiveModel',
      'towers': ravdess_av_towers('whisper' in own),
      'embed_dim': 64,
      # CLIP starts at temperature 0.07; SigLIP at scale 10, bias -10.
      'init_scale': 10.0 if sigmoid else 1 / 0.07,
      'init_bias': -10.0,
      'dtype': 'float32',
  })
  ravdess_av_train(c, 'smoke' in data_arg.split(','))
  c.train.select_metric, c.train.select_mode = 'mean_r1', 'max'
  return c.lock()
