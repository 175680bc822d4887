"""What every conversation model shares: its inputs, and the text encoder it may run.

A conversation model reads a batch of padded dialogues (see `affectjax/data/erc.py`):
per-modality utterance features `batch[m]` (B, L, D_m), or token ids `text_ids` (B, L, T)
with `text_ids_mask` when the text encoder is fine-tuned end to end, `speaker` (B, L) and
`label_mask` (B, L).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from affectjax.encoders import bert


class ConversationModel(nn.Module):
  """Shared fields and inputs: per-modality utterance features, mask, lengths, speakers.

  With `text_ids` among the modalities the model runs a BERT-style encoder under the
  parameter name `encoder`, built from the folder `encoder` names; its weights are
  random until a config loads them (`config.init.hf`). `num_speakers` and `encoder`
  come from the dataset (`data_fields`): the speaker cap and the tokenizer's folder."""
  data_fields: ClassVar[tuple[str, ...]] = ('num_speakers', 'encoder')
  modalities: Sequence[str]
  out_dim: int
  num_speakers: int = 2
  encoder: str = ''  # Hugging Face folder of the encoder ('' = all-MiniLM-L6-v2).
  dtype: str = 'float32'

  def __post_init__(self):
    # Files are read when the model is built, never while it is traced.
    if 'text_ids' in self.modalities:
      object.__setattr__(self, '_encoder_config',
                         bert.BertConfig.from_folder(bert.check_folder(self.encoder)))
    super().__post_init__()

  def utterance_features(self, batch, *, train: bool) -> list[jax.Array]:
    feats = []
    for m in self.modalities:
      if m == 'text_ids':  # Fine-tuning: the encoder runs inside the model.
        ids, tok_mask = batch['text_ids'], batch['text_ids_mask']
        b, length, t = ids.shape
        enc = bert.BertEncoder(self._encoder_config, name='encoder')
        hidden = enc(ids.reshape(b * length, t), tok_mask.reshape(b * length, t), train=train)
        feats.append(bert.mean_pool(hidden, tok_mask.reshape(b * length, t))
                     .reshape(b, length, -1))
      else:
        feats.append(batch[m].astype(jnp.dtype(self.dtype)))
    return feats

  @staticmethod
  def mask_and_lengths(batch):
    mask = batch['label_mask']
    return mask, jnp.sum(mask > 0, axis=1).astype(jnp.int32)
