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

import common
import ml_collections

from affectjax import config as config_lib


def get_config(arg=None):
  v = common.variants(arg, flags=('whisper', 'smoke'), folds=6,
                      start=('scratch', 'finetune', 'probe'), streams=('av', 'audio', 'face'))
  c = config_lib.base_config()
  modalities = {'av': ('audio', 'face'), 'audio': ('audio',), 'face': ('face',)}[v.streams]
  # The towers of the RAVDESS audio-visual family, as in configs/ravdess_contrastive.py, so that
  # `config.init` maps them one to one (tests/test_config.py checks they match): log-mel
  # frames (4 stacked per token, 80 ms) through a 2-layer transformer, or with `whisper`
  # frozen whisper-base layers (a learnt mix, attentive statistics pooling, a projection
  # to 64); the 35 action units through a 2-layer MLP.
  audio = {'kind': 'transformer', 'width': 64, 'num_layers': 2, 'num_heads': 4,
           'mlp_ratio': 2, 'dropout': 0.1, 'mask': 'frame_mask', 'stride': 4,
           'pool': 'mean', 'token_drop': 0.0}
  if v.whisper:
    audio = {'kind': 'speech_encoder', 'width': 64, 'dropout': 0.1, 'mask': 'frame_mask',
             'pool': 'attention', 'layer_weights': True, 'encoder_dropout': 0.0,
             'mask_time_prob': 0.0}
  towers = {'audio': audio,
            'face': {'kind': 'mlp', 'width': 64, 'num_layers': 2, 'dropout': 0.1}}
  c.data = ml_collections.ConfigDict({
      'name': 'ravdess_av',
      'dir': '',  # Else $AFFECTJAX_DATA_DIR.
      'modalities': modalities,
      'fold': v.fold,
      'valid_actors': 4,  # Validation: the next fold's actors.
      'speaker_norm': False,  # Action units standardised per actor (name it in tables).
      'max_seconds': 1.0 if v.smoke else 4.5 if v.whisper else 4.0,
      'top_db': 40.0,  # Leading and trailing silence trimmed below this.
      'window_ms': 25.0,
      'hop_ms': 20.0,
      'n_mels': 64,
      # Log-mel standardisation: 'train' (per band, the training actors' statistics),
      # 'clip' (per clip and band) or 'speaker' (per band, each actor's own; name it).
      'audio_norm': 'train',
      # '' = log-mel; whisper: frozen whisper-base features of every layer, 80-ms frames.
      'encoder': 'whisper-base' if v.whisper else '',
      'encoder_mode': 'frozen',  # frozen (cached features) | finetune (the model runs it).
      'encoder_pool': 4,  # frozen: encoder frames averaged per stored frame (4 = 80 ms).
      'encoder_pad_seconds': 0.0,  # Whisper only: 30 = its training window.
      'encoder_norm': 'none',  # frozen: none | train | speaker (per-speaker; tables name it).
  })
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.Classifier',
      'towers': {m: towers[m] for m in modalities},
      'hidden': 0,  # A linear head on the concatenated tower features.
      'dropout': 0.1,
      'dtype': 'float32',
  })
  c.task = ml_collections.ConfigDict({
      'name': 'classification', 'num_classes': 8, 'loss': 'cross_entropy',
      'metrics': 'classification'})
  # 16 training actors, 960 clips; 240 per validation and test split.
  c.train.update(batch_size=64, eval_batch_size=240, num_steps=1000, eval_every=100,
                 log_every=50, select_metric='uar', select_mode='max')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=100,
                 weight_decay=0.05)
  if v.start != 'scratch':
    c.init.checkpoint = 'best'
    c.init.map = (('towers', 'towers'),)  # The head is new; the rest of the run is unused.
    c.optim.groups = (('towers/.*', 0.0 if v.start == 'probe' else 0.1),)
  if v.smoke:
    c.train.update(batch_size=32, eval_batch_size=240, num_steps=6, eval_every=3,
                   log_every=3)
    c.optim.warmup_steps = 1
  return c.lock()
