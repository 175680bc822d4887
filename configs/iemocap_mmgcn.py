r"""MMGCN on IEMOCAP (6 classes; published weighted-F1: DialogueGCN 64.18, MMGCN 66.22, COGMEN 67.63).

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/iemocap_mmgcn.py --workdir /tmp/affectjax/iemocap_mmgcn

Text is frozen all-MiniLM-L6-v2 sentence embeddings, computed once into the feature
cache. Variants after a colon, comma-separated: finetune (the encoder is trained with
the graph model), a corpus (iemocap, iemocap_features, meld, meld_features, emorynlp),
sentiment (MELD), a modality subset (t, ta, tav: features pickles only), smoke.
The checkpoint is chosen on validation weighted F1.
"""

from common import erc_training, variants

from affectjax import config as config_lib
from affectjax import models
from affectjax.data import erc


def get_config(arg=None):
  c = config_lib.base_config()
  c.model = models.default_config('dialog_graph.MMGCN')
  erc.configure(c, arg, corpus='iemocap')
  erc_training(c, variants(arg))
  return c.lock()
