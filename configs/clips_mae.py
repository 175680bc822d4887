r"""Masked autoencoders on a folder of clips, without labels (pretraining).

av (default): the audio-visual masked autoencoder (HiCMAE-style): face tubelets (90% tube
masking) and log-mel patches (80% random masking), a cross-modal fusion encoder, decoders
with hierarchical skip connections, and the hierarchical cross-modal InfoNCE at
intermediate encoder layers (weight 0.1, temperature 0.07, as in Sun et al. 2024).
video: the video masked autoencoder (VideoMAE-style) on face crops: 16 frames of
160 x 160, (2, 16, 16) tubelets, 90% tube masking.

  affectjax build-clips --input $AFFECTJAX_DATA_DIR/ravdess/videos --labels ravdess --face
  affectjax train --config configs/clips_mae.py:av,ravdess,fold1 --workdir /tmp/affectjax/avmae_fold1
  affectjax train --config configs/clips_mae.py:video,ravdess,fold1 --workdir /tmp/affectjax/videomae_fold1
  affectjax train --config configs/clips_mae.py:av,videos,smoke --workdir /tmp/affectjax/avmae_demo

The first command is optional: training builds the same dataset on first use.
Variants after a colon, comma-separated: av (default) | video (the streams); the corpus,
ravdess (default; <data dir>/ravdess/videos, the Video_Speech_Actor_XX archives'
01-01-*.mp4 files, 6 speaker folds) | cremad (<data dir>/crema-d/VideoFlash, 5 speaker
folds) | videos (the two unlabelled face videos in ../shared/data/videos, every clip in
every split: a demo of the pipeline, not a study); fold1 .. fold<n> (test speakers, never
seen in pretraining); tiny (default; the av model's 2-layer decoders get one skip
connection and one contrastive level) | small | base | large (model.size); smoke.
Fine-tune with configs/clips_mae_classifier.py:av,finetune (or video,finetune).
"""

import common
import ml_collections

from affectjax import config as config_lib
from affectjax.models import mae

SIZES = ('tiny', *[s for s in mae.SIZES if s != 'tiny'])  # tiny when none is given.


def get_config(arg=None):
  v = common.variants(arg, flags=('smoke',), folds=6, streams=('av', 'video'),
                      corpus=tuple(common.CLIP_CORPORA), size=SIZES)
  c = config_lib.base_config()
  if v.streams == 'av':
    c.model = ml_collections.ConfigDict({
        'name': 'mae.AudioVisualMAE',
        'size': v.size,  # Width, depth and heads: mae.SIZES.
        'patch': (4, 16),  # Log-mel: 4 frames x 16 mel bands.
        'tubelet': (2, 16, 16),  # Video: 2 frames x 16 x 16 pixels.
        'audio_mask_ratio': 0.8,
        'video_mask_ratio': 0.9,
        # 0: the size's own; the tiny model's fusion encoder and decoders are shallower.
        'decoder_depth': 2 if v.size == 'tiny' else 0,
        'fusion_depth': 1 if v.size == 'tiny' else 2,
        'norm_targets': True,
        'mlp_ratio': 4,
        'dropout': 0.0,
        'mask_field': 'frame_mask',
        'dtype': 'float32',
    })
    c.task = ml_collections.ConfigDict({
        'name': 'masked_reconstruction', 'loss': 'mse',
        'contrastive_weight': 0.1, 'temperature': 0.07})  # HiCMAE's cross-modal InfoNCE.
  else:
    c.model = ml_collections.ConfigDict({
        'name': 'mae.VideoMAE',
        'size': v.size,
        'patch': (4, 16),  # Unused by video.
        'tubelet': (2, 16, 16),
        'mask_ratio': 0.9,
        'norm_targets': True,
        'mlp_ratio': 4,
        'dropout': 0.0,
        'mask_field': 'frame_mask',
        'dtype': 'float32',
    })
    c.task = ml_collections.ConfigDict({'name': 'masked_reconstruction', 'loss': 'mse'})
  folder, labels, num_folds, split = common.CLIP_CORPORA[v.corpus]
  c.data = ml_collections.ConfigDict({
      'name': 'clips',
      'dir': '',  # Else $AFFECTJAX_DATA_DIR.
      'input': folder,  # Relative to the data directory, or absolute.
      'labels': labels,  # ravdess | crema-d | none | a CSV file (affectjax/data/labels.py).
      'modalities': ('audio', 'video') if v.streams == 'av' else ('video',),
      'split': split,  # folds (by speaker) | all (every clip in every split: a demo).
      'num_folds': num_folds,
      'fold': v.fold,
      'repeat': 4 if split == 'all' else 1,  # 'all': 2 clips x 4, one example per device.
      'num_frames': 8 if v.smoke else 16,  # HiCMAE's 16 frames,
      'size': 32 if v.smoke else 160,  # of 160 x 160 face crops,
      'face': True,  # found by the face detector,
      'face_margin': 1.3,  # with this margin around the box.
      'max_seconds': 1.0 if v.smoke else 4.0,
      'window_ms': 25.0,
      'hop_ms': 20.0,
      'n_mels': 64,
      'skip_bad': False,  # True: leave out clips that fail to decode (counted).
      'tfds_dir': '',  # Where the built dataset goes; default ~/.cache/affectjax/tfds.
  })
  # MAE's recipe at CPU-sized batches; selected on the validation reconstruction error.
  c.train.update(batch_size=32, eval_batch_size=64, num_steps=2000, eval_every=200,
                 log_every=50, select_metric='loss', select_mode='min')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=100,
                 weight_decay=0.05)
  if split == 'all':  # The two demo videos, 4 times each: one batch holds them all.
    c.train.update(batch_size=8, eval_batch_size=8)
  if v.smoke:  # One evaluation, so one checkpoint: this is for tests.
    c.train.update(num_steps=2, eval_every=2, log_every=1, batch_size=8, eval_batch_size=8)
    c.optim.warmup_steps = 1
  return c.lock()
