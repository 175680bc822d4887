"""Emotion recognition in conversation: conversation-level TFDS builders and datasets.

One example is one dialogue: its utterances in order, padded to `max_utterances`,
with `speaker` (per-dialogue speaker index, by order of first appearance),
`label` and `label_mask` (1 on real utterances). The graph and state-space models
build their graphs from these on device.

`config.data.corpus` picks the source (see `affectjax/data/conversations.py` for the
splits): `iemocap` (conversation pickle), `iemocap_features` (IEMOCAP_features.pkl
layout), `meld` (official CSVs), `meld_features` (MELD_features_raw.pkl), `emorynlp`.
`config.data.text`:

* `frozen`: cached mean-pooled sentence embeddings from the encoder folder
  `config.data.encoder` (default all-MiniLM-L6-v2); computed once per corpus and
  encoder into the feature cache (`affectjax extract-features` does it explicitly);
* `tokens`: token ids (`text_ids`, `text_ids_mask`, (N, L, T)) for a model that
  fine-tunes the encoder end to end;
* `pickle`: the text features stored in a features pickle.

Audio and vision come only from the features pickles (`config.data.modalities`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from affectjax import errors
from affectjax.data import base, conversations, prepared
from affectjax import workdir

CORPORA = {
    # corpus: (reader, file or folder under the data dir, label names per label field)
    'iemocap': (conversations.read_iemocap_conversations, 'iemocap/iemocap_conversations.pkl',
                {'labels': conversations.IEMOCAP_LABELS}),
    'iemocap_features': (conversations.read_iemocap_features, 'iemocap/IEMOCAP_features.pkl',
                         {'labels': conversations.IEMOCAP_LABELS}),
    'meld': (conversations.read_meld, 'meld', {'labels': conversations.MELD_EMOTIONS,
                                              'sentiments': conversations.MELD_SENTIMENTS}),
    'meld_features': (conversations.read_meld_features, 'meld/MELD_features_raw.pkl',
                      {'labels': conversations.MELD_EMOTIONS,
                       'sentiments': conversations.MELD_SENTIMENTS}),
    'emorynlp': (conversations.read_emorynlp, 'emorynlp',
                 {'labels': conversations.EMORYNLP_EMOTIONS}),
}
FEATURE_MODALITIES = ('text', 'audio', 'vision')


@prepared.builder_cache
def _builders():
  """The builder classes, defined on first use (importing TFDS takes a second)."""
  tfds = prepared.tfds()

  @dataclasses.dataclass
  class ErcConfig(tfds.core.BuilderConfig):
    corpus: str = ''
    path: str = ''
    features: tuple = ()  # Per-utterance feature arrays stored (the features pickles).
    label_fields: tuple = ('labels',)

  class ErcConversations(tfds.core.GeneratorBasedBuilder):
    """One record per dialogue: speakers, texts, label fields, optional features. A label
    field the source lacks (sentiments in some features pickles) is stored empty."""
    VERSION = tfds.core.Version('1.1.0')
    RELEASE_NOTES = {'1.1.0': 'Feature arrays of any width; every label field of the corpus.'}
    BUILDER_CONFIGS = []
    MANUAL_DOWNLOAD_INSTRUCTIONS = 'Point config.data.dir at the folder holding the corpus.'

    def _info(self):
      c = self.builder_config
      ints = lambda: tfds.features.Tensor(shape=(None,), dtype=np.int32)  # noqa: E731
      features = {'id': tfds.features.Text(), 'speakers': tfds.features.Sequence(
          tfds.features.Text()), 'texts': tfds.features.Sequence(tfds.features.Text())}
      features.update({f: ints() for f in c.label_fields})
      for m in c.features:
        features[m] = tfds.features.Tensor(shape=(None, None), dtype=np.float32,
                                           encoding=tfds.features.Encoding.BYTES)
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
      del dl_manager
      reader = CORPORA[self.builder_config.corpus][0]
      splits = reader(self.builder_config.path)
      return {name: self._generate_examples(dialogues) for name, dialogues in splits.items()}

    def _generate_examples(self, dialogues):
      c = self.builder_config
      for d in dialogues:
        record = {'id': d['id'], 'speakers': d['speakers'], 'texts': d['texts']}
        record.update({f: np.asarray(d.get(f, ()), np.int32) for f in c.label_fields})
        record.update({m: d[m] for m in c.features})
        yield d['id'], record

  return (ErcConversations, ErcConfig)


def prepare(corpus: str, data_dir: str, tfds_dir: str):
  """Builds (once) and returns the TFDS builder of `corpus` under `data_dir`."""
  if corpus not in CORPORA:
    raise errors.DataError(f'config.data.corpus: unknown {corpus!r} ({", ".join(CORPORA)})')
  _, rel, label_names = CORPORA[corpus]
  path = os.path.join(data_dir, rel)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: not found (expected the {corpus} files under the data '
                            'directory; see affectjax/data/conversations.py for the layout)')
  # The builder config's name carries a hash of the sources' content (the CSVs of a corpus
  # folder): a replaced file is rebuilt.
  files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith('.csv')) \
      if os.path.isdir(path) else [path]
  stamp = prepared.content_hash(files)
  features = FEATURE_MODALITIES if corpus.endswith('_features') else ()
  ErcConversations, ErcConfig = _builders()
  builder = ErcConversations(
      data_dir=tfds_dir, file_format='array_record',
      config=ErcConfig(name=f'{corpus}_{stamp[:12]}', corpus=corpus, path=path,
                       features=features, label_fields=tuple(label_names)))
  return prepared.build_once(builder, data_dir, check=lambda: _check_source(corpus, path))


def _check_source(corpus: str, path: str) -> None:
  """Reads the corpus once before TFDS builds it: every split non-empty, and each
  feature array as wide as the first one of its modality."""
  splits = CORPORA[corpus][0](path)
  widths = {}
  for split, dialogues in splits.items():
    if not dialogues:
      raise errors.DataError(f'{path}: split {split!r} has no dialogues')
    for d in dialogues:
      for m in FEATURE_MODALITIES:
        if m in d:
          width = widths.setdefault(m, d[m].shape[1])
          if d[m].shape[1] != width:
            raise errors.DataError(f'{path}: dialogue {d["id"]!r}: field {m!r} has '
                                 f'{d[m].shape[1]} features per utterance, the others {width}')


def _text(x) -> str:
  return x.decode('utf-8') if isinstance(x, bytes) else str(x)


def read_prepared(builder) -> dict[str, list[dict]]:
  """Every dialogue of every split, read back through `tfds.data_source`, in id order."""
  out = {}
  for split, source in builder.as_data_source().items():
    dialogues = []
    for i in range(len(source)):
      r = source[i]
      d = {k: (np.asarray(v) if k not in ('id', 'speakers', 'texts') else v)
           for k, v in r.items()}
      d['id'] = _text(r['id'])
      d['speakers'] = [_text(s) for s in r['speakers']]
      d['texts'] = [_text(s) for s in r['texts']]
      dialogues.append(d)
    if not dialogues:
      raise errors.DataError(f'{builder.data_dir}: split {split!r} is empty')
    out[split] = sorted(dialogues, key=lambda d: d['id'])
  return out


# -- text features ---------------------------------------------------------------------------


def utterance_texts(dialogue: dict, context: int = 0) -> list[str]:
  """The text the encoder reads for each utterance: the utterance itself, then (with
  `context` > 0) up to that many preceding utterances of the dialogue, newest first, each
  after a [SEP]. The utterance comes first so that truncation to max_tokens drops the
  oldest context, never the utterance."""
  texts = dialogue['texts']
  return [' [SEP] '.join(texts[j] for j in range(i, max(i - context, 0) - 1, -1))
          for i in range(len(texts))]


def _frozen_weights(d):
  """(params, cache name) of the frozen encoder: `d.encoder`'s own weights, or those of
  the run in `d.encoder_workdir` (keyed on the loaded weights' content)."""
  from affectjax.encoders import bert
  if not d.get('encoder_workdir'):
    return None, bert.fingerprint(d.encoder)
  from affectjax import transfer
  _, params = transfer.run_encoder(d.encoder_workdir, 'config.data.encoder_workdir')
  name = os.path.basename(os.path.normpath(d.encoder_workdir))
  return params, f'{name}_{bert.params_fingerprint(params)}'


def feature_cache_path(config, builder, weights_name=None) -> str:
  d = config.data
  root = d.get('cache_dir', '') or os.path.join(prepared.cache_dir(), 'features')
  context = f'__ctx{d.text_context}' if d.get('text_context', 0) else ''
  weights_name = weights_name or _frozen_weights(d)[1]
  name = f'{builder.builder_config.name}__{weights_name}__{d.max_tokens}{context}.npz'
  return os.path.join(root, name)


def extract_features(config, builder=None, splits=None) -> str:
  """Frozen sentence embeddings of every utterance, written atomically to the cache."""
  from affectjax.encoders import bert
  d = config.data
  if builder is None:
    builder = prepare(d.corpus, _data_dir(config), prepared.tfds_dir(config))
    splits = read_prepared(builder)
  params, weights_name = _frozen_weights(d)
  path = feature_cache_path(config, builder, weights_name)
  if os.path.exists(path):
    return path
  context = d.get('text_context', 0)
  texts = sorted({t for dialogues in splits.values() for dl in dialogues
                  for t in utterance_texts(dl, context)})
  # Minutes on a CPU the first time: say so, with a bar on a terminal and a line every
  # few seconds in a log.
  emb = bert.embed_texts(texts, d.encoder, d.max_tokens, params=params,
                         progress=f'embedding {len(texts)} utterances with '
                         f'{d.encoder or "all-MiniLM-L6-v2"} once (cached in '
                         f'{os.path.dirname(path)})')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  workdir.write_atomic(path, 'the feature cache', lambda f: np.savez(
      f, texts=np.asarray(texts, dtype=object).astype(str), embeddings=emb), mode='wb')
  return path


def _load_cached(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as f:
      return dict(zip(f['texts'].tolist(), f['embeddings']))
  except Exception as e:
    raise errors.DataError(f'{path}: unreadable feature cache ({e}); delete it to recompute') \
        from None


# -- padding ----------------------------------------------------------------------------------


def speaker_ids(names, num_speakers: int) -> np.ndarray:
  """Per-dialogue speaker index by order of first appearance; the rest share the last id."""
  seen: dict[str, int] = {}
  for n in names:
    seen.setdefault(n, len(seen))
  return np.minimum([seen[n] for n in names], num_speakers - 1).astype(np.int32)


def pad_dialogues(dialogues, max_len: int, label_field: str, num_speakers: int,
                  utterance_features: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
  """Dialogues -> (N, max_len, ...) arrays with `label_mask`; dialogue ids in `id`."""
  n = len(dialogues)
  out = {'speaker': np.zeros((n, max_len), np.int32), 'label': np.zeros((n, max_len), np.int32),
         'label_mask': np.zeros((n, max_len), np.float32)}
  for i, d in enumerate(dialogues):
    k = len(d['texts'])
    out['speaker'][i, :k] = speaker_ids(d['speakers'], num_speakers)
    out['label'][i, :k] = np.asarray(d[label_field])
    out['label_mask'][i, :k] = 1
  for name, per_dialogue in utterance_features.items():
    first = per_dialogue[0]
    arr = np.zeros((n, max_len, *first.shape[1:]), first.dtype)
    for i, x in enumerate(per_dialogue):
      arr[i, :len(x)] = x
    out[name] = arr
  return out


def split_utterances(dialogues, feats: dict[str, list[np.ndarray]]):
  """Every utterance as a dialogue of its own (`config.data.unit=utterance`): no context
  reaches the model (each is its dialogue's first speaker). Features are computed per
  dialogue first, so `text_context` still reads the preceding utterances."""
  out, out_feats = [], {name: [] for name in feats}
  for i, dl in enumerate(dialogues):
    n = len(dl['texts'])
    for j in range(n):
      one = {k: (v[j:j + 1] if isinstance(v, (list, np.ndarray)) and len(v) == n else v)
             for k, v in dl.items()}
      one['id'] = f'{dl["id"]}#{j}'
      out.append(one)
      for name, per_dialogue in feats.items():
        out_feats[name].append(per_dialogue[i][j:j + 1])
  return out, out_feats


def _data_dir(config) -> str:
  return prepared.data_dir(config, 'iemocap/, meld/ or emorynlp/')


def _check_fields(config) -> None:
  """The data fields that need no file to be checked, checked before any file is read."""
  d = config.data
  if d.corpus in CORPORA and d.label_field not in CORPORA[d.corpus][2]:
    raise errors.DataError(f'config.data.label_field: {d.label_field!r} is not a label of '
                         f'{d.corpus} (have {", ".join(CORPORA[d.corpus][2])})')
  if d.text not in ('frozen', 'tokens', 'pickle'):
    raise errors.DataError(f'config.data.text: unknown {d.text!r} (frozen | tokens | pickle)')
  context = d.get('text_context', 0)
  if not isinstance(context, int) or context < 0:
    raise errors.DataError(f'config.data.text_context={context!r}: must be an integer >= 0')
  if context and d.text == 'pickle':
    raise errors.DataError('config.data.text_context: stored text features (text=pickle) '
                         'have no text to add context to')
  if d.get('unit', 'dialogue') not in ('dialogue', 'utterance'):
    raise errors.DataError(f'config.data.unit: unknown {d.unit!r} (dialogue | utterance)')
  if d.max_utterances < 0:
    raise errors.DataError(f'config.data.max_utterances={d.max_utterances}: must be >= 0')


def load(config) -> base.Dataset:
  d = config.data
  _check_fields(config)
  builder = prepare(d.corpus, _data_dir(config), prepared.tfds_dir(config))
  splits = read_prepared(builder)
  label_names = CORPORA[d.corpus][2]
  first = splits['train'][0]
  if len(first[d.label_field]) != len(first['texts']):  # Stored empty: the source lacks it.
    raise errors.DataError(f'{builder.builder_config.path}: has no {d.label_field!r} labels')
  num_classes = len(label_names[d.label_field])
  longest = max(len(dl['texts']) for dialogues in splits.values() for dl in dialogues)
  unit = d.get('unit', 'dialogue')
  max_len = 1 if unit == 'utterance' else d.max_utterances or -(-longest // 8) * 8
  if unit == 'dialogue' and longest > max_len:
    raise errors.DataError(f'config.data.max_utterances={max_len}: {d.corpus} has a dialogue '
                         f'of {longest} utterances')
  modalities = tuple(d.modalities)
  for m in modalities:
    if m not in FEATURE_MODALITIES:
      raise errors.DataError(f'config.data.modalities: unknown {m!r} (text, audio, vision)')
    if m != 'text' and m not in first:
      raise errors.DataError(f'config.data.modalities: {d.corpus} has no {m} features (only '
                           'the *_features pickles do)')
  if d.text == 'pickle' and 'text' in modalities and 'text' not in first:
    raise errors.DataError(f'config.data.text=pickle: {d.corpus} has no stored text features')

  if not isinstance(d.num_speakers, int) or d.num_speakers < 1:
    raise errors.DataError(f'config.data.num_speakers={d.num_speakers!r}: must be an '
                         'integer >= 1')
  if d.get('encoder_workdir') and not (d.text == 'frozen' and 'text' in modalities):
    raise errors.DataError(f'config.data.encoder_workdir: only frozen text features use it '
                         f'(config.data.text={d.text!r}); fine-tuning starts from a run '
                         'through config.init.workdir')
  for subtree, folder in config.init.get('hf', ()) if d.text == 'tokens' else ():
    if folder != d.encoder:
      raise errors.DataError(f'config.init.hf: {subtree!r} loads {folder!r} but '
                           f'config.data.encoder={d.encoder!r} (the tokenizer must match)')
  embeddings = None
  if 'text' in modalities and d.text == 'frozen':
    embeddings = _load_cached(extract_features(config, builder, splits))
  arrays, extra = {}, ['speaker', 'label_mask']
  for split, dialogues in splits.items():
    arrays[split] = dialogue_arrays(dialogues, d, modalities, max_len, embeddings)
  if 'text' in modalities and d.text == 'tokens':
    modalities = tuple('text_ids' if m == 'text' else m for m in modalities)
    extra.append('text_ids_mask')
  where = f'{builder.name}/{builder.builder_config.name}'
  return base.Dataset.from_arrays(
      arrays, modalities=modalities, num_classes=num_classes, where=where,
      extra=tuple(extra), class_names=label_names[d.label_field],
      # Speaker ids are capped at num_speakers - 1; token ids come from d.encoder's vocabulary.
      model_inputs={'num_speakers': d.num_speakers, 'encoder': d.encoder},
      preprocess={'kind': 'erc', 'max_len': max_len, 'modalities': list(d.modalities),
                  **{k: d.get(k, v) for k, v in (
                      ('text', 'frozen'), ('encoder', ''), ('encoder_workdir', ''),
                      ('max_tokens', 128), ('text_context', 0), ('num_speakers', 1),
                      ('unit', 'dialogue'), ('label_field', 'label'))}})


def dialogue_arrays(dialogues, d, modalities, max_len: int, embeddings=None):
  """Padded (N, max_len, ...) arrays of dialogues (dicts of `texts`, `speakers`, the label
  field and stored features) as the ERC models read them; `d`: the data fields (or a run
  card's preprocessing); `embeddings`: text -> frozen embedding (else computed here)."""
  context, feats = d.get('text_context', 0), {}
  unit = d.get('unit', 'dialogue')
  for m in modalities:
    if m == 'text' and d['text'] == 'frozen':
      if embeddings is None:
        from affectjax.encoders import bert
        texts = sorted({t for dl in dialogues for t in utterance_texts(dl, context)})
        params = _frozen_weights(d)[0]
        embeddings = dict(zip(texts, bert.embed_texts(texts, d['encoder'], d['max_tokens'],
                                                      params=params)))
      feats['text'] = [np.stack([embeddings[t] for t in utterance_texts(dl, context)])
                       for dl in dialogues]
    elif m == 'text' and d['text'] == 'tokens':
      from affectjax.encoders import bert
      tokenizer = bert.Tokenizer(d['encoder'], d['max_tokens'])
      enc = [tokenizer(utterance_texts(dl, context)) for dl in dialogues]
      feats['text_ids'] = [e[0] for e in enc]
      feats['text_ids_mask'] = [e[1] for e in enc]
    else:
      feats[m] = [np.asarray(dl[m], np.float32) for dl in dialogues]
  if unit == 'utterance':
    dialogues, feats = split_utterances(dialogues, feats)
  return pad_dialogues(dialogues, max_len, d['label_field'], d['num_speakers'], feats)


INPUTS = 'conversations (.jsonl or .csv of speaker and utterance)'


def inputs_from_conversations(path: str, preprocess: dict):
  """(utterance ids, model arrays, {id: {'speaker', 'utterance'}}) of the conversations in
  `path` through a text ERC run's pipeline (its run card's `preprocess`)."""
  import ml_collections
  pre = ml_collections.ConfigDict(preprocess)
  if tuple(pre.modalities) != ('text',) or pre.text not in ('frozen', 'tokens'):
    raise errors.DataError(f'{path}: this run reads {", ".join(pre.modalities)} '
                           f'({pre.text} text); conversations as text give the text only: '
                           'give an .npz of its fields')
  dialogues = read_conversations(path, pre.label_field)
  longest = max(len(dl['texts']) for dl in dialogues)
  if pre.unit == 'dialogue' and longest > pre.max_len:
    raise errors.DataError(f'{path}: a dialogue of {longest} utterances; this run reads at '
                           f'most {pre.max_len}')
  arrays = dialogue_arrays(dialogues, pre, tuple(pre.modalities), pre.max_len)
  extra = {f'{dl["id"]}#{j}': {'speaker': speaker, 'utterance': text} for dl in dialogues
           for j, (speaker, text) in enumerate(zip(dl['speakers'], dl['texts']))}
  return list(extra), arrays, extra


def read_conversations(path: str, label_field: str = 'label') -> list[dict]:
  """Dialogues from a JSONL file (one utterance per line: {"speaker", "utterance"[,
  "dialogue"]}) or a CSV with those columns; utterances in file order, grouped by
  `dialogue` (one dialogue when absent); `label_field` holds placeholder labels (0)."""
  import json
  if path.lower().endswith('.csv'):  # Rows by their line in the file (the header is 1).
    return _dialogues([(i + 2, r) for i, r in enumerate(base.read_csv(
        path, 'a conversation CSV: [dialogue,] speaker, utterance', ('speaker', 'utterance')))],
        path, label_field)
  rows = []
  try:
    with open(path, newline='') as f:
      for i, line in enumerate(f, 1):
        if line.strip():
          try:
            rows.append((i, json.loads(line)))
          except ValueError:
            raise errors.DataError(f'{path}:{i}: not a JSON object') from None
  except (OSError, UnicodeDecodeError) as e:
    raise errors.DataError(f'{path}: unreadable ({type(e).__name__}: {e})') from None
  return _dialogues(rows, path, label_field)


def _dialogues(rows, path: str, label_field: str) -> list[dict]:
  """(line, row) pairs grouped into dialogues, with each row's fields checked."""
  if not rows:
    raise errors.DataError(f'{path}: no utterances')
  dialogues: dict[str, dict] = {}
  for line, r in rows:
    if not isinstance(r, dict):
      raise errors.DataError(f'{path}:{line}: not a JSON object')
    for field in ('speaker', 'utterance'):
      if not isinstance(r.get(field), str) or not r[field].strip():
        raise errors.DataError(f'{path}:{line}: field {field!r} is missing or empty')
    key = str(r.get('dialogue', '') or 'dialogue')
    dl = dialogues.setdefault(key, {'id': key, 'texts': [], 'speakers': [], label_field: []})
    dl['texts'].append(r['utterance'])
    dl['speakers'].append(r['speaker'])
    dl[label_field].append(0)
  return list(dialogues.values())


def num_classes(data) -> int:
  """Classes of `config.data`'s corpus and label field (for `config.task.num_classes`)."""
  return len(CORPORA[data.corpus][2].get(data.label_field, ()))
