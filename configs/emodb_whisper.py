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

import common
import ml_collections

from affectjax import config as config_lib


def get_config(arg=None):
  v = common.variants(arg, flags=('finetune', 'speaker', 'smoke'), folds=10)
  c = config_lib.base_config()
  # Frozen features standardised with the training split's statistics, pooled by mean and
  # std, a linear head: chosen on RAVDESS validation UAR only
  # (experiments/speech_encoders/head_choice.py); per-speaker statistics only in the named
  # variant.
  c.data = ml_collections.ConfigDict({
      'name': 'emodb',
      'dir': '',  # Else $AFFECTJAX_DATA_DIR.
      'modalities': ('audio',),
      'fold': v.fold,  # fold1..fold10: one test speaker each.
      'max_seconds': 1.0 if v.smoke else 2.0,  # The shared copies are cut or padded to 2 s.
      'audio_norm': 'clip',  # clip | speaker (log-mel only).
      'top_db': 40.0, 'window_ms': 25.0, 'hop_ms': 20.0, 'n_mels': 64,
      'encoder': 'whisper-base',
      'encoder_mode': 'finetune' if v.finetune else 'frozen',
      'encoder_pool': 4,  # 80 ms per stored frame.
      'encoder_pad_seconds': 0.0,  # 30 would be Whisper's training window.
      'encoder_norm': 'speaker' if v.speaker else 'none' if v.finetune else 'train',
  })
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.Classifier',
      'towers': {'audio': {'kind': 'speech_encoder', 'mask': 'frame_mask', 'width': 0,
                           'dropout': 0.2, 'pool': 'mean_std', 'layer_weights': True,
                           'encoder_dropout': 0.0, 'mask_time_prob': 0.0}},
      'hidden': 0, 'dropout': 0.2, 'dtype': 'float32'})
  c.task = ml_collections.ConfigDict({
      'name': 'classification', 'num_classes': 7, 'loss': 'cross_entropy',
      'metrics': 'classification'})
  # About 430 training clips and 50 per validation speaker; evaluation batches of 64 cover
  # a speaker in one batch.
  c.train.update(batch_size=32, eval_batch_size=64, num_steps=800, eval_every=50,
                 log_every=50, select_metric='uar', select_mode='max')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=50,
                 weight_decay=0.05)
  if v.finetune:
    c.train.update(batch_size=16, eval_batch_size=64, num_steps=400, eval_every=40,
                   log_every=20)
    encoder = 'towers/audio/speech/encoder'
    c.init.hf = ((encoder, '<data.encoder>'),)  # Whichever encoder the data runs.
    c.optim.groups = ((f'{encoder}/.*', 0.05),)  # The encoder at 5e-5, the head at 1e-3.
    c.optim.update(layer_decay=0.8, layer_decay_prefix=encoder)
  if v.smoke:
    c.train.update(batch_size=16, eval_batch_size=64, num_steps=4, eval_every=2, log_every=2)
    c.optim.warmup_steps = 1
  return c.lock()
