r"""No-context baseline on IEMOCAP: each utterance classified alone (`dialog_graph.ContextFree`).

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/iemocap_contextfree.py --workdir /tmp/affectjax/iemocap_contextfree

Text is frozen all-MiniLM-L6-v2 sentence embeddings, computed once into the feature
cache. Variants after a colon, comma-separated: utterance (each utterance is its own
example, 32 per batch), finetune (the encoder is trained too), a corpus (iemocap,
iemocap_features, meld, meld_features, emorynlp), sentiment (MELD), a modality subset
(t, ta, tav: features pickles only), smoke. The checkpoint is chosen on validation
weighted F1.

Encoder adaptation (the first stage of `experiments/erc/run.py --modes adapted`):

  affectjax train --config configs/iemocap_contextfree.py:finetune,utterance --workdir W
  affectjax export-encoder --config configs/iemocap_contextfree.py:finetune,utterance --workdir W --out DIR
"""

from common import erc_training, variants

from affectjax import config as config_lib
from affectjax import models
from affectjax.data import erc


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = models.default_config('dialog_graph.ContextFree')
  erc.configure(c, arg, corpus='iemocap')
  erc_training(c, variants(arg))
  return c.lock()
