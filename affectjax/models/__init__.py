"""Model families, one file each; `config.model.name` is `<file>.<Class>`."""

from __future__ import annotations

import dataclasses
import importlib

import flax.linen as nn


def _model_class(name: str):
  file, _, cls_name = name.rpartition('.')
  try:
    module = importlib.import_module(f'affectjax.models.{file}')
    return getattr(module, cls_name)
  except (ModuleNotFoundError, AttributeError, ValueError):
    raise ValueError(f'config.model.name: unknown model {name!r} (expected '
                     f'"<file>.<Class>" under affectjax/models/)') from None


def config_fields(name: str) -> tuple[str, ...]:
  """The fields of `<file>.<Class>` a config states in `config.model` (all but those the
  data decides, `data_fields`, and the ones every model gets from the dataset)."""
  cls = _model_class(name)
  return tuple(f.name for f in dataclasses.fields(cls)
               if f.name not in ('modalities', 'out_dim', 'parent', 'name',
                                 *getattr(cls, 'data_fields', ())))


def get_model(model_config, modalities, out_dim: int, model_inputs=None) -> nn.Module:
  """Builds `affectjax.models.<file>.<Class>` from the fields of `config.model`.

  Every field except `name` is passed to the module's constructor, so a field the
  module does not have is an error rather than silently ignored. `model_inputs`
  (the dataset's `model_inputs`) fills the fields the data decides, those the class
  lists in `data_fields` (e.g. a conversation model's `num_speakers`); a config that
  states one of them is an error, since the data, not the config, decides it.
  """
  name = model_config.name
  cls = _model_class(name)
  fields = {f.name for f in dataclasses.fields(cls)}
  from_data = set(getattr(cls, 'data_fields', ()))
  kwargs = {}
  for key, value in model_config.items():
    if key == 'name':
      continue
    if key not in fields:
      raise ValueError(f'config.model.{key}: {name} has no such field')
    if key in from_data:
      raise ValueError(f'config.model.{key}: set by the dataset for {name}, not by the '
                       f'config (see config.data)')
    kwargs[key] = value.to_dict() if hasattr(value, 'to_dict') else value
  for key, value in (model_inputs or {}).items():
    if key in from_data:
      kwargs[key] = value
  return cls(modalities=tuple(modalities), out_dim=out_dim, **kwargs)
