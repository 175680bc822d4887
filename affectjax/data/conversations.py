"""Readers for the emotion-recognition-in-conversation (ERC) corpora.

Each reader returns `{split: [dialogue, ...]}` where a dialogue is a dict with
`id`, `speakers` (list of str, one per utterance), `texts` (list of str), `labels`
(list of int) and, where the source has them, per-utterance feature arrays.
The standard splits are kept:

* IEMOCAP, conversation pickle of declare-lab/conv-emotion
  (`[speakers, labels, sentences, train_ids, test_ids, valid_ids]`): 108 train +
  12 valid dialogues (sessions 1-4), 31 test (session 5); 6 classes.
* IEMOCAP, the `IEMOCAP_features.pkl` layout used by most multimodal ERC code
  (videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual,
  videoSentence, trainVid, testVid): validation is `VALID_FRACTION` of the training
  dialogues drawn with `VALID_SEED` (the file has no validation split).
* MELD (official CSVs, declare-lab/MELD): 1038 / 114 / 280 dialogues; 7 emotions and
  3 sentiments.
* EmoryNLP (official CSVs): scenes are dialogues; 7 emotions.

Pickles go through the restricted unpickler; CSVs are decoded as UTF-8, falling
back to cp1252 (older MELD releases). This module is the data layer that the
conversation builders and graph models build on.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from affectjax import errors
from affectjax.data import base, safe_pickle

IEMOCAP_LABELS = ('happy', 'sad', 'neutral', 'angry', 'excited', 'frustrated')
MELD_EMOTIONS = ('neutral', 'surprise', 'fear', 'sadness', 'joy', 'disgust', 'anger')
MELD_SENTIMENTS = ('negative', 'neutral', 'positive')
EMORYNLP_EMOTIONS = ('Joyful', 'Mad', 'Peaceful', 'Neutral', 'Sad', 'Powerful', 'Scared')
VALID_FRACTION = 0.1
VALID_SEED = 0
_IEMOCAP_WHAT = ('the IEMOCAP conversation pickle [speakers, labels, sentences, train_ids, '
                 'test_ids, valid_ids]; published with https://github.com/declare-lab/conv-emotion')
_FEATURES_WHAT = ('IEMOCAP_features.pkl (videoIDs, videoSpeakers, videoLabels, videoText, '
                  'videoAudio, videoVisual, videoSentence, trainVid, testVid); published with '
                  'https://github.com/declare-lab/conv-emotion')
_MELD_WHAT = 'the MELD CSVs; published with https://github.com/declare-lab/MELD'
_MELD_FEATURES_WHAT = ('MELD_features_raw.pkl (the IEMOCAP_features.pkl layout plus a tenth '
                       'element); published with https://github.com/declare-lab/conv-emotion')


def _int_labels(values, path: str, dialogue, field: str = 'labels') -> list[int]:
  """Class indices as ints; a string, float or missing label is a one-line error."""
  try:
    values = list(values)
  except TypeError:
    raise errors.DataError(f'{path}: dialogue {str(dialogue)!r}: field {field!r} is not a list '
                         f'of class indices') from None
  out = []
  for i, x in enumerate(values):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) and not (
        isinstance(x, (float, np.floating)) and float(x).is_integer()):
      raise errors.DataError(f'{path}: dialogue {str(dialogue)!r}: field {field!r} has {x!r} '
                           f'at utterance {i}, expected a class index')
    out.append(int(x))
  return out


def _check_labels(dialogue: dict, num_classes: int, where: str) -> None:
  for i, label in enumerate(dialogue['labels']):
    if not isinstance(label, (int, np.integer)) or not 0 <= label < num_classes:
      raise errors.DataError(f'{where}: dialogue {dialogue["id"]!r}: field \'labels\' has '
                           f'{label!r} at utterance {i}, outside [0, {num_classes})')


def _check_lengths(dialogue: dict, fields: Sequence[str], where: str) -> None:
  n = len(dialogue['labels'])
  for f in fields:
    if len(dialogue[f]) != n:
      raise errors.DataError(f'{where}: dialogue {dialogue["id"]!r}: field {f!r} has '
                           f'{len(dialogue[f])} utterances but \'labels\' has {n}')


def _check_split_ids(splits: dict, path: str, fields: dict) -> None:
  """Dialogue ids are strings or integers, each in one split once: a dialogue in both
  training and test data leaks its utterances into the score. `fields`: split -> the
  file's name for that split's id list (for the message)."""
  where = {}
  for split, ids in splits.items():
    if isinstance(ids, (str, bytes)) or not hasattr(ids, '__iter__'):
      raise errors.DataError(f'{path}: field {fields[split]!r} must be a list of dialogue ids, '
                           f'got {type(ids).__name__}')
    for vid in ids:
      if isinstance(vid, bool) or not isinstance(vid, (str, int, np.integer)):
        raise errors.DataError(f'{path}: field {fields[split]!r}: dialogue id {vid!r} is a '
                             f'{type(vid).__name__}, expected a string or an integer')
      if str(vid) in where:
        other = where[str(vid)]
        raise errors.DataError(
            f'{path}: dialogue {str(vid)!r} is listed twice in field {fields[split]!r}'
            if other == split else
            f'{path}: dialogue {str(vid)!r} is in field {fields[other]!r} and in '
            f'{fields[split]!r}: a dialogue in two splits leaks into the score')
      where[str(vid)] = split


def read_iemocap_conversations(path: str) -> dict[str, list[dict]]:
  data = safe_pickle.load(path, _IEMOCAP_WHAT)
  if not isinstance(data, (list, tuple)) or len(data) != 6:
    raise errors.DataError(f'{path}: expected a 6-element list, got {type(data).__name__} '
                         f'({_IEMOCAP_WHAT})')
  speakers, labels, sentences, train_ids, test_ids, valid_ids = data
  _check_split_ids({'train': train_ids, 'valid': valid_ids, 'test': test_ids}, path,
                   {'train': 'train_ids', 'valid': 'valid_ids', 'test': 'test_ids'})
  out = {}
  for split, ids in (('train', train_ids), ('valid', valid_ids), ('test', test_ids)):
    dialogues = []
    for vid in ids:
      for name, table in (('speakers', speakers), ('labels', labels), ('sentences', sentences)):
        if vid not in table:
          raise errors.DataError(f'{path}: dialogue {vid!r} of split {split} has no {name}')
      d = {'id': str(vid), 'speakers': [str(s) for s in speakers[vid]],
           'texts': [str(s) for s in sentences[vid]],
           'labels': _int_labels(labels[vid], path, vid)}
      _check_lengths(d, ('speakers', 'texts'), path)
      _check_labels(d, len(IEMOCAP_LABELS), path)
      dialogues.append(d)
    out[split] = dialogues
  return out


def _speaker_name(s) -> str:
  """'M' / 'F' as they are; one-hot speaker vectors become their index."""
  if isinstance(s, str):
    return s
  return str(int(np.argmax(np.asarray(s))))


def read_features_pickle(path: str, num_classes: int, what: str) -> dict[str, list[dict]]:
  """The (videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual,
  videoSentence, trainVid, testVid[, extra]) layout of IEMOCAP_features.pkl and
  MELD_features_raw.pkl. A tenth element, when it is a per-dialogue label table
  (MELD: sentiments), is kept as `sentiments`."""
  data = safe_pickle.load(path, what)
  if not isinstance(data, (list, tuple)) or len(data) not in (9, 10):
    raise errors.DataError(f'{path}: expected a 9- or 10-element sequence ({what})')
  ids, speakers, labels, text, audio, visual, sentences, train_vid, test_vid = data[:9]
  extra = data[9] if len(data) == 10 and isinstance(data[9], dict) else None
  _check_split_ids({'train': train_vid, 'test': test_vid}, path,
                   {'train': 'trainVid', 'test': 'testVid'})
  train_vid = sorted(map(str, train_vid))
  if len(train_vid) < 2 or not len(test_vid):
    raise errors.DataError(f'{path}: field \'trainVid\' has {len(train_vid)} and \'testVid\' '
                         f'{len(test_vid)} dialogues; need >= 2 training (validation is '
                         'carved from them) and >= 1 test')
  rng = np.random.default_rng(VALID_SEED)
  n_valid = max(1, int(round(VALID_FRACTION * len(train_vid))))
  valid_vid = set(rng.choice(train_vid, n_valid, replace=False))
  splits = {'train': [v for v in train_vid if v not in valid_vid], 'valid': sorted(valid_vid),
            'test': sorted(map(str, test_vid))}
  keys = {str(k): k for k in speakers}  # Ids may be ints in the file; splits are strings.
  tables = {'videoSpeakers': speakers, 'videoLabels': labels, 'videoText': text,
            'videoAudio': audio, 'videoVisual': visual, 'videoSentence': sentences}
  out = {}
  for split, vids in splits.items():
    dialogues = []
    for vid in vids:
      key = keys.get(vid, vid)
      for name, table in tables.items():
        if key not in table:
          raise errors.DataError(f'{path}: field {name!r} has no entry for dialogue {vid!r}')
      d = {'id': vid, 'speakers': [_speaker_name(s) for s in speakers[key]],
           'texts': [str(s) for s in sentences[key]],
           'labels': _int_labels(labels[key], path, vid)}
      for name, table in (('text', text), ('audio', audio), ('vision', visual)):
        feats = np.asarray(table[key], np.float32)
        if feats.ndim != 2 or not np.isfinite(feats).all():
          raise errors.DataError(f'{path}: dialogue {vid!r}: field {name!r} must be finite '
                               f'(utterances, features) values, got shape {feats.shape}')
        d[name] = feats
      if extra is not None and key in extra:
        d['sentiments'] = _int_labels(extra[key], path, vid, 'sentiments')
      _check_lengths(d, ('speakers', 'texts', 'text', 'audio', 'vision'), path)
      _check_labels(d, num_classes, path)
      dialogues.append(d)
    out[split] = dialogues
  return out


def read_iemocap_features(path: str) -> dict[str, list[dict]]:
  return read_features_pickle(path, len(IEMOCAP_LABELS), _FEATURES_WHAT)


def read_meld_features(path: str) -> dict[str, list[dict]]:
  """MELD_features_raw.pkl (same layout; 7 emotions in MELD_EMOTIONS order)."""
  return read_features_pickle(path, len(MELD_EMOTIONS), _MELD_FEATURES_WHAT)


def _int_cell(row: dict, column: str, path: str, index: int) -> int:
  try:
    return int(row[column])
  except (TypeError, ValueError):
    raise errors.DataError(f'{path}: row {index + 1}: column {column!r} is {row[column]!r}, '
                         'expected an integer') from None


def parse_speakers(cell: str) -> list[str]:
  """EmoryNLP's Speaker cell: a Python list literal of quoted names ("['Monica Geller']")
  or a bare name. Parsed with a regular expression, never evaluated (a crafted cell could
  make `ast.literal_eval` exhaust memory or the stack)."""
  cell = cell.strip()
  if cell.startswith('[') and cell.endswith(']'):
    names = [a if a else b for a, b in _QUOTED.findall(cell[1:-1])]
    return names or [cell]
  return [cell]


_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")


def _group(rows, key, order, path, label_fields) -> list[dict]:
  dialogues: dict = {}
  for row in rows:
    dialogues.setdefault(key(row), []).append(row)
  out = []
  for did, utts in dialogues.items():
    utts.sort(key=order)
    d = {'id': did, 'speakers': [u['_speaker'] for u in utts],
         'texts': [u['_text'] for u in utts]}
    for field, (column, names) in label_fields.items():
      values = []
      for u in utts:
        if u[column] not in names:
          raise errors.DataError(f'{path}: dialogue {did!r}: column {column!r} has unknown '
                               f'label {u[column]!r} (expected one of {list(names)})')
        values.append(names.index(u[column]))
      d[field] = values
    out.append(d)
  return out


def read_meld(directory: str) -> dict[str, list[dict]]:
  """MELD from `{train,dev,test}_sent_emo.csv`; `labels` = emotion, `sentiments` too."""
  out = {}
  for split, name in (('train', 'train'), ('valid', 'dev'), ('test', 'test')):
    path = os.path.join(directory, f'{name}_sent_emo.csv')
    rows = base.read_csv(path, _MELD_WHAT, ('Utterance', 'Speaker', 'Emotion', 'Sentiment',
                                        'Dialogue_ID', 'Utterance_ID'))
    for i, r in enumerate(rows):
      r['_speaker'], r['_text'] = r['Speaker'], r['Utterance']
      r['_order'] = _int_cell(r, 'Utterance_ID', path, i)
      r['Dialogue_ID'] = str(_int_cell(r, 'Dialogue_ID', path, i))
    out[split] = _group(rows, lambda r: r['Dialogue_ID'], lambda r: r['_order'],
                        path, {'labels': ('Emotion', MELD_EMOTIONS),
                               'sentiments': ('Sentiment', MELD_SENTIMENTS)})
  return out


def read_emorynlp(directory: str) -> dict[str, list[dict]]:
  """EmoryNLP from `emorynlp_{train,dev,test}_final.csv`; a scene is a dialogue."""
  out = {}
  for split, name in (('train', 'train'), ('valid', 'dev'), ('test', 'test')):
    path = os.path.join(directory, f'emorynlp_{name}_final.csv')
    rows = base.read_csv(path, 'the EmoryNLP CSVs; published with '
                     'https://github.com/emorynlp/emotion-detection',
                     ('Utterance', 'Speaker', 'Emotion', 'Season', 'Episode', 'Scene_ID',
                      'Utterance_ID'))
    for i, r in enumerate(rows):
      r['_speaker'] = ' & '.join(parse_speakers(r['Speaker']))
      r['_text'] = r['Utterance']
      r['_order'] = _int_cell(r, 'Utterance_ID', path, i)
    out[split] = _group(
        rows, lambda r: f'{r["Season"]}_{r["Episode"]}_{r["Scene_ID"]}',
        lambda r: r['_order'], path, {'labels': ('Emotion', EMORYNLP_EMOTIONS)})
  return out
