r"""Emotion classification (7 classes) on Berlin EmoDB, leave one speaker out, with a
pretrained speech encoder (openai/whisper-base by default), frozen or fine-tuned, as
configs/ravdess_whisper.py does on RAVDESS.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/emodb_whisper.py:fold1 --workdir /tmp/affectjax/emodb_whisper_fold1

Variants after a colon, comma-separated: fold1 .. fold10 (the test speaker, in ascending
id order; validation: the next speaker; training: the other eight); finetune; speaker
(per-speaker normalisation of the frozen features: a named variant, never a headline);
smoke. Checkpoints are chosen on validation UAR. Time on a 2-core CPU: the 535 clips are
encoded once (about 40 s); each frozen fold trains in under a minute.
"""

from common import split_variants

import ml_collections

from affectjax import config as config_lib
from affectjax.data import emodb


def get_config(arg=None):
  own, data_arg = split_variants(arg, ('finetune', 'speaker'))
  finetune, smoke = 'finetune' in own, 'smoke' in data_arg.split(',')
  c = config_lib.base_config()
  emodb.configure(c, data_arg)
  d = c.data
  d.encoder = 'whisper-base'
  d.encoder_mode = 'finetune' if finetune else 'frozen'
  d.encoder_pool = 4
  # Frozen features standardised with the training split's statistics, pooled by mean and
  # std, a linear head: chosen on RAVDESS validation UAR only
  # (experiments/speech_encoders/head_choice.py); per-speaker statistics only in the named
  # variant.
  d.encoder_norm = 'speaker' if 'speaker' in own else 'none' if finetune else 'train'
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.Classifier',
      'towers': {'audio': {'kind': 'speech_encoder', 'mask': 'frame_mask', 'width': 0,
                           'dropout': 0.2, 'pool': 'mean_std', 'layer_weights': True,
                           'encoder_dropout': 0.0, 'mask_time_prob': 0.0}},
      'hidden': 0, 'dropout': 0.2, 'dtype': 'float32'})
  c.task = ml_collections.ConfigDict({'name': 'classification', 'num_classes': 7,
                                      'loss': 'cross_entropy', 'metrics': 'classification'})
  t, o = c.train, c.optim
  t.select_metric, t.select_mode = 'uar', 'max'
  # About 430 training clips and 50 per validation speaker; evaluation batches of 64 cover
  # a speaker in one batch.
  t.batch_size, t.eval_batch_size = 32, 64
  t.num_steps, t.eval_every, t.log_every = 800, 50, 50
  o.learning_rate, o.warmup_steps, o.weight_decay = 1e-3, 50, 0.05
  if finetune:
    t.batch_size, t.eval_batch_size = 16, 64
    t.num_steps, t.eval_every, t.log_every = 400, 40, 20
    encoder = 'towers/audio/speech/encoder'
    c.init.hf = ((encoder, '<data.encoder>'),)  # Whichever encoder the data runs.
    o.groups = ((f'{encoder}/.*', 0.05),)
    o.layer_decay, o.layer_decay_prefix = 0.8, encoder
  if smoke:
    t.batch_size, t.eval_batch_size = 16, 64
    t.num_steps, t.eval_every, t.log_every = 4, 2, 2
    o.warmup_steps = 1
  return c.lock()
