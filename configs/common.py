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


def ravdess_av_towers() -> ml_collections.ConfigDict:
  """The towers of the RAVDESS audio-visual family, shared by pretraining and
  fine-tuning so that `config.init` maps them one to one: log-mel frames (4 stacked per
  token, 80 ms) through a 2-layer transformer; the 35 action units through a 2-layer MLP."""
  return ml_collections.ConfigDict({
      'audio': {'kind': 'transformer', 'width': 64, 'num_layers': 2, 'num_heads': 4,
                'mlp_ratio': 2, 'dropout': 0.1, 'mask': 'frame_mask', 'stride': 4,
                'pool': 'mean', 'token_drop': 0.0},
      'face': {'kind': 'mlp', 'width': 64, 'num_layers': 2, 'dropout': 0.1},
  })


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
