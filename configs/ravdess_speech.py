r"""Frame-level speech emotion recognition on RAVDESS speech (8 emotions, log-mel frames
computed in the input pipeline, speaker-independent actor folds): SpeechSSM (S5 layers)
or SpeechTransformer.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/ravdess_speech.py:ssm,fold1 --workdir /tmp/affectjax/ravdess_ssm_fold1
  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/ravdess_speech.py:transformer,fold1 --workdir /tmp/affectjax/ravdess_transformer_fold1

Variants after a colon, comma-separated: the model (ssm | transformer; ssm when none),
fold1 .. fold6 (test actors from ravdess/actor_folds.json), smoke. The checkpoint is
chosen on validation accuracy (two actors of the next fold). experiments/ssm/run.py also
scores them on EmoDB's shared emotions.

Time of :ssm on 2 cores of Intel(R) Xeon(R) Processor, measured by
experiments/benchmarks/config_times.py: a training step of 32 clips takes 0.41 s, an
evaluation with its checkpoint 7 s, compiling 13 s, so the default 600 steps (evaluated
every 50) take about 6 min per fold.

Time of :transformer on 2 cores of Intel(R) Xeon(R) Processor, measured by
experiments/benchmarks/config_times.py: a training step of 32 clips takes 0.73 s, an
evaluation with its checkpoint 15 s, compiling 5 s, so the default 600 steps (evaluated
every 50) take about 11 min per fold.
"""

import common
import ml_collections

from affectjax import config as config_lib

MODELS = {
    'ssm': {'name': 'ssm.SpeechSSM', 'ssm': 's5', 'width': 64, 'state_size': 0,
            'num_layers': 2, 'bidirectional': True, 'dropout': 0.1, 'dtype': 'float32'},
    'transformer': {'name': 'speech.SpeechTransformer', 'width': 64, 'num_layers': 2,
                    'num_heads': 4, 'mlp_ratio': 2, 'dropout': 0.1, 'dtype': 'float32'},
}


def get_config(arg=None):
  v = common.variants(arg, flags=('smoke',), folds=6, model=tuple(MODELS))
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict(MODELS[v.model])
  c.data = ml_collections.ConfigDict({
      'name': 'ravdess',
      'dir': '',  # Else $AFFECTJAX_DATA_DIR.
      'modalities': ('audio',),
      'fold': v.fold,
      'num_valid': 2,  # Validation actors, taken from the next fold.
      'unlabelled': (),  # ('emodb',): unlabelled extra training clips (pretraining only).
      'max_seconds': 1.0 if v.smoke else 4.0,
      'top_db': 40.0,  # Leading and trailing silence trimmed below this.
      'window_ms': 25.0,
      'hop_ms': 20.0,  # 50 frames/s: about 200 frames per trimmed clip.
      'n_mels': 64,
      'audio_norm': 'clip',  # clip | train | speaker (per-speaker: name it in tables).
      'encoder': '',  # '' = log-mel frames; else whisper-base or a speech encoder folder.
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
  if v.smoke:
    c.train.update(num_steps=4, eval_every=2, log_every=2, batch_size=16,
                   eval_batch_size=128)
    c.optim.warmup_steps = 1  # Shorter than the 4-step run.
  return c.lock()
