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

import common
import ml_collections

from affectjax import config as config_lib


def get_config(arg=None):
  v = common.variants(arg, flags=('sigmoid', 'supcon', 'whisper', 'smoke'),
                      folds=6)
  c = config_lib.base_config()
  # The towers of the RAVDESS audio-visual family, as in configs/ravdess_av_classifier.py, so that
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
      'modalities': ('audio', 'face'),
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
      'name': 'contrastive.ContrastiveModel',
      'towers': towers,
      'embed_dim': 64,
      # CLIP starts at temperature 0.07; SigLIP at scale 10, bias -10.
      'init_scale': 10.0 if v.sigmoid else 1 / 0.07,
      'init_bias': -10.0,
      'dtype': 'float32',
  })
  c.task = ml_collections.ConfigDict({
      'name': 'contrastive',
      'loss': 'sigmoid' if v.sigmoid else 'infonce',
      'lean': True,  # shard_map form: per-device logits are local x global rows.
      'knn_k': 20,  # Validation k-NN probe.
      'probe_l2': 1e-2,  # Validation linear probe.
      # supcon: also pull together same-emotion clips (uses the labels; not self-supervised).
      'supcon_weight': 1.0 if v.supcon else 0.0,
      'supcon_temperature': 0.1,
  })
  # 16 training actors, 960 clips; 240 per validation and test split.
  c.train.update(batch_size=64, eval_batch_size=240, num_steps=1000, eval_every=200,
                 log_every=50, select_metric='mean_r1', select_mode='max')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=100,
                 weight_decay=0.05)
  if v.smoke:
    c.train.update(batch_size=32, eval_batch_size=240, num_steps=6, eval_every=3,
                   log_every=3)
    c.optim.warmup_steps = 1
  return c.lock()
