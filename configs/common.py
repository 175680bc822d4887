"""Helpers shared by the config files (imported as `common` from a config beside it)."""

from __future__ import annotations

import ml_collections


def variants(arg: str | None) -> list[str]:
  """'fold2,smoke' -> ['fold2', 'smoke']."""
  return [x for x in (arg or '').split(',') if x]


def split_variants(arg: str | None, own) -> tuple[list[str], str]:
  """(this config's own variants, the rest joined for the data module's configure)."""
  items = variants(arg)
  return [x for x in items if x in own], ','.join(x for x in items if x not in own)


def mae_sizes() -> tuple[str, ...]:
  """The named masked-autoencoder sizes (variants of the MAE configs)."""
  from affectjax.models import mae
  return tuple(mae.SIZES)


def mae_size(own) -> str:
  """The last size variant among a config's own variants; 'tiny' when none is given."""
  sizes = [o for o in own if o in mae_sizes()]
  return sizes[-1] if sizes else 'tiny'


def ravdess_av_towers(whisper: bool = False) -> ml_collections.ConfigDict:
  """The towers of the RAVDESS audio-visual family, shared by pretraining and
  fine-tuning so that `config.init` maps them one to one: log-mel frames (4 stacked per
  token, 80 ms) through a 2-layer transformer, or with `whisper` frozen whisper-base layers
  (a learnt mix, attentive statistics pooling, a projection to 64); the 35 action units
  through a 2-layer MLP."""
  audio = {'kind': 'transformer', 'width': 64, 'num_layers': 2, 'num_heads': 4,
           'mlp_ratio': 2, 'dropout': 0.1, 'mask': 'frame_mask', 'stride': 4,
           'pool': 'mean', 'token_drop': 0.0}
  if whisper:
    audio = {'kind': 'speech_encoder', 'width': 64, 'dropout': 0.1, 'mask': 'frame_mask',
             'pool': 'attention', 'layer_weights': True, 'encoder_dropout': 0.0,
             'mask_time_prob': 0.0}
  return ml_collections.ConfigDict({
      'audio': audio, 'face': {'kind': 'mlp', 'width': 64, 'num_layers': 2, 'dropout': 0.1}})


def whisper_audio(c, smoke: bool) -> None:
  """The `whisper` variant's data: frozen whisper-base features of every layer (80-ms
  frames) instead of log-mel, clips up to 4.5 s (every trimmed RAVDESS clip)."""
  with c.unlocked():
    d = c.data
    d.encoder, d.encoder_mode, d.encoder_pool = 'whisper-base', 'frozen', 4
    d.max_seconds = 1.0 if smoke else 4.5


def ravdess_av_train(c, smoke: bool) -> None:
  """Batch sizes and loop lengths of the RAVDESS audio-visual family (16 training
  actors, 960 clips; 240 per validation and test split)."""
  t = c.train
  t.batch_size, t.eval_batch_size = 64, 240
  t.num_steps, t.eval_every, t.log_every = 1000, 200, 50
  c.optim.learning_rate, c.optim.warmup_steps, c.optim.weight_decay = 1e-3, 100, 0.05
  if smoke:
    t.batch_size, t.eval_batch_size = 32, 240
    t.num_steps, t.eval_every, t.log_every = 6, 3, 3
    c.optim.warmup_steps = 1


def mosi_towers() -> ml_collections.ConfigDict:
  """The towers of the MOSI contrastive family (utterance feature vectors: text 100,
  audio 73, video 100 values), shared by pretraining and the fusion model."""
  return ml_collections.ConfigDict({
      m: {'kind': 'mlp', 'width': 64, 'num_layers': 2, 'dropout': 0.2}
      for m in ('text', 'audio', 'vision')})


# Task, loop and optimizer of each family. The data modules' configure() set only data
# fields; what is trained, and how, is stated here once per family and applied by every
# config file of that family (so the tables that compare its models share one setting).

def erc_training(c, items) -> None:
  """ERC (IEMOCAP, MELD, EmoryNLP): utterance classification selected on validation
  weighted F1; `finetune` trains the text encoder (from the tokenizer's folder) at a
  fine-tuning rate, `utterance` batches single utterances, `smoke` is seconds long."""
  from affectjax.data import erc
  with c.unlocked():
    t = c.task
    t.name, t.loss, t.metrics = 'classification', 'cross_entropy', 'classification'
    t.num_classes = erc.num_classes(c.data)
    c.train.select_metric, c.train.select_mode = 'weighted_f1', 'max'
    c.train.batch_size, c.train.eval_batch_size = 16, 32
    c.train.num_steps, c.train.eval_every, c.train.log_every = 600, 25, 25
    c.optim.learning_rate, c.optim.weight_decay = 1e-3, 1e-4
    if 'finetune' in items:
      c.optim.learning_rate = 5e-5
      # The model's `encoder` subtree starts from the folder the tokenizer comes from.
      c.init.hf = (('encoder', c.data.encoder),)
    if 'utterance' in items:
      c.train.batch_size, c.train.eval_batch_size = 32, 256
    if 'smoke' in items:
      c.train.num_steps, c.train.eval_every, c.train.log_every = 20, 10, 5


def mosi_training(c, items) -> None:
  """CMU-MOSI: sentiment regression with an L1 loss, selected on validation MAE."""
  with c.unlocked():
    c.task.name, c.task.loss, c.task.metrics = 'regression', 'l1', 'sentiment'
    c.train.select_metric, c.train.select_mode = 'mae', 'min'
    c.train.batch_size, c.train.eval_batch_size = 32, 128
    c.train.num_steps, c.train.eval_every, c.train.log_every = 600, 50, 50
    c.optim.learning_rate = 1e-3
    if 'smoke' in items:
      c.train.num_steps, c.train.eval_every, c.train.log_every = 20, 10, 5


def ravdess_speech_training(c, items) -> None:
  """RAVDESS speech: 8 emotions, selected on validation accuracy; AdamW with warmup."""
  from affectjax.data import ravdess
  with c.unlocked():
    t = c.task
    t.name, t.loss, t.metrics = 'classification', 'cross_entropy', 'classification'
    t.num_classes = len(ravdess.EMOTIONS)
    c.train.select_metric, c.train.select_mode = 'accuracy', 'max'
    c.train.batch_size, c.train.eval_batch_size = 32, 64
    c.train.num_steps, c.train.eval_every, c.train.log_every = 600, 50, 50
    c.optim.learning_rate, c.optim.warmup_steps, c.optim.weight_decay = 1e-3, 100, 0.05
    if 'smoke' in items:
      c.train.num_steps, c.train.eval_every, c.train.log_every = 4, 2, 2
      c.train.batch_size, c.train.eval_batch_size = 16, 128
      c.optim.warmup_steps = 1  # Shorter than the 4-step run.


def synthetic_training(c, items) -> None:
  """The synthetic benchmark: training defaults identical for every model it compares;
  binary classification, or `regression` (MSE, selected on validation MSE)."""
  with c.unlocked():
    c.task.num_classes = 2
    c.train.num_steps, c.train.batch_size, c.train.eval_every = 3000, 128, 500
    c.optim.learning_rate = 2e-3
    if 'regression' in items:
      c.task.name, c.task.loss, c.task.metrics = 'regression', 'mse', 'regression'
      c.train.select_metric, c.train.select_mode = 'mse', 'min'
    if 'smoke' in items:
      c.train.num_steps, c.train.eval_every, c.train.log_every = 40, 20, 10
      c.train.batch_size, c.train.eval_batch_size = 32, 64


# Clip folders the clips configs know by name: (folder under the data directory, label
# scheme, number of speaker folds, split). `videos` is ../shared/data/videos: two
# unlabelled real face videos, every clip in every split (a pipeline demo, not a study).
CLIP_CORPORA = {
    'ravdess': ('ravdess/videos', 'ravdess', 6, 'folds'),  # Actor_XX/01-01-*.mp4 (24 actors)
    'cremad': ('crema-d/VideoFlash', 'crema-d', 5, 'folds'),  # 91 speakers' .flv clips
    'videos': ('videos', 'none', 1, 'all'),
}


def clips_data(c, own_items, data_arg: str) -> None:
  """The clips data fields: the corpus variant (`ravdess` default | `cremad` | `videos`),
  then the data module's own variants (fold<k>, smoke)."""
  from affectjax.data import clips
  clips.configure(c, data_arg, own=tuple(CLIP_CORPORA))
  corpus = [x for x in own_items if x in CLIP_CORPORA]
  folder, labels, folds, split = CLIP_CORPORA[corpus[-1] if corpus else 'ravdess']
  with c.unlocked():
    d = c.data
    d.input, d.labels, d.num_folds, d.split = folder, labels, folds, split
    if split == 'all':
      d.fold, d.repeat = 1, 4  # 2 clips x 4: one batch of 8, one example per device.


def mae_training(c, items, demo: bool = False) -> None:
  """Masked-autoencoder pretraining: selected on the validation reconstruction error;
  AdamW with warmup and cosine decay (MAE's recipe at CPU-sized batches)."""
  with c.unlocked():
    c.train.select_metric, c.train.select_mode = 'loss', 'min'
    c.train.batch_size, c.train.eval_batch_size = 32, 64
    c.train.num_steps, c.train.eval_every, c.train.log_every = 2000, 200, 50
    c.optim.learning_rate, c.optim.warmup_steps, c.optim.weight_decay = 1e-3, 100, 0.05
    if demo:  # The two demo videos, 4 times each: one batch holds them all.
      c.train.batch_size = c.train.eval_batch_size = 8
    if 'smoke' in items:  # One evaluation, so one checkpoint: this is for tests.
      c.train.num_steps, c.train.eval_every, c.train.log_every = 2, 2, 1
      c.train.batch_size = 8
      c.train.eval_batch_size = min(c.train.eval_batch_size, 8)
      c.optim.warmup_steps = 1
