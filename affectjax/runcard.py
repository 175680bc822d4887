"""The run card: what a finished run's workdir says about itself, beside its checkpoints.

`run.json` (the task, modalities, classes, the model's input spec and the preprocessing
settings) and `preprocess.npz` (the training split's normalisation statistics) are written
by the trainer and read by `affectjax predict`, `eval` and `sample-inputs`; `config.json`
is read back here too. This module sits below both (the trainer imports it, and the
prediction side does), so neither imports the other for it.
"""

from __future__ import annotations

import json
import os

import numpy as np

from affectjax import errors
from affectjax import workdir as workdir_lib

CARD, ARRAYS = 'run.json', 'preprocess.npz'
FORMAT = 2  # 2: preprocess.kind names the data module that reads raw inputs.


def write_card(workdir: str, config, dataset, exp) -> None:
  """run.json and preprocess.npz for `load_run`, written atomically (lead process)."""
  spec = {k: [list(shape), np.dtype(dtype).name]
          for k, (shape, dtype) in exp.element_spec.items()}
  card = {
      'format': FORMAT,
      'config': config.get('name', ''),
      'task': config.task.name,
      'modalities': list(dataset.modalities),
      'element_spec': spec,
      'num_classes': dataset.num_classes,
      'class_names': list(dataset.class_names) if dataset.class_names else None,
      'model_inputs': {k: v for k, v in dataset.model_inputs.items()
                       if isinstance(v, (int, float, str, bool))},
      'preprocess': dict(dataset.preprocess),
  }
  workdir_lib.write_atomic(os.path.join(workdir, ARRAYS), 'the preprocessing statistics',
                           lambda f: np.savez(f, **dict(dataset.preprocess_arrays)),
                           mode='wb')
  workdir_lib.write_atomic(os.path.join(workdir, CARD), 'the run card',
                           lambda f: f.write(json.dumps(card, indent=1, sort_keys=True)))


def _tuples(x):
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  return x


def _read_json(path: str, if_missing: str):
  """A workdir file's JSON, or a WorkdirError naming it (`if_missing`: what to say when
  it is not there)."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise errors.WorkdirError(f'{path}: not found; {if_missing}') from None
  except (OSError, ValueError) as e:
    raise errors.WorkdirError(f'{path}: unreadable ({errors.one_line(e)})') from None


def read_config(workdir: str):
  """The run's resolved config, from its config.json."""
  import ml_collections
  path = os.path.join(workdir, 'config.json')
  raw = _read_json(path, f'is {workdir} an affectjax run (affectjax train --workdir)?')
  from affectjax import config as config_lib
  try:
    if not isinstance(raw, dict):
      raise config_lib.ConfigError(f'expected a JSON object, got {type(raw).__name__}')
    config = ml_collections.ConfigDict(_tuples(raw))
    config_lib.validate(config)  # Edited by hand, it is checked as training checked it.
  except (KeyError, AttributeError) as e:
    missing = str(e.args[0] if isinstance(e, KeyError) else e).strip('\'"')
    raise errors.WorkdirError(f'{path}: a field is missing ({missing}); the file was edited '
                              'or is not an affectjax config') from None
  except (config_lib.ConfigError, TypeError) as e:
    raise errors.WorkdirError(f'{path}: {errors.one_line(e)}') from None
  return config


# The run card's fields and their JSON types (run.json, written by write_card).
_CARD_FIELDS = {'element_spec': dict, 'class_names': (list, type(None)), 'modalities': list,
                'num_classes': (int, type(None)), 'task': str, 'model_inputs': dict,
                'preprocess': dict}


def read_card(workdir: str) -> dict:
  """The run card (run.json) of `workdir`, checked: a WorkdirError naming the file and
  field when it is missing, unreadable, of another format, or edited into other types."""
  path = os.path.join(workdir, CARD)
  card = _read_json(path, 'the run was trained before affectjax saved run cards: train it '
                    'again to predict with it')
  if not isinstance(card, dict):
    raise errors.WorkdirError(f'{path}: not a JSON object')
  if card.get('format') != FORMAT:
    raise errors.WorkdirError(f'{path}: field format {card.get("format")!r} '
                              f'(this affectjax reads {FORMAT})')
  for field, kind in _CARD_FIELDS.items():
    if field not in card:
      raise errors.WorkdirError(f'{path}: field {field} is missing')
    if isinstance(card[field], bool) or not isinstance(card[field], kind):
      raise errors.WorkdirError(f'{path}: field {field} is a {type(card[field]).__name__}')
  return card
