"""Datasets, one module per dataset, looked up by `config.data.name`."""

from __future__ import annotations

import importlib
import os

from affectjax.data.base import ArraySource, Dataset, DataError


def get_dataset(config) -> Dataset:
  """Imports `affectjax.data.<config.data.name>` and calls its `load(config)`."""
  name = config.data.name
  directory = config.data.get('dir', '')
  if directory and not os.path.isdir(directory):
    raise DataError(f'config.data.dir: no such directory: {directory}')
  from_env = os.environ.get('AFFECTJAX_DATA_DIR', '')
  if not directory and from_env and not os.path.isdir(from_env):
    raise DataError(f'$AFFECTJAX_DATA_DIR: no such directory: {from_env}')
  if not isinstance(name, str) or not name.isidentifier():
    raise DataError(f'config.data.name: {name!r} is not a dataset module name')
  try:
    module = importlib.import_module(f'affectjax.data.{name}')
  except ModuleNotFoundError as e:
    if e.name == f'affectjax.data.{name}':
      raise DataError(f'config.data.name: no dataset module affectjax/data/{name}.py') from None
    raise
  if not callable(getattr(module, 'load', None)):
    raise DataError(f'config.data.name: affectjax/data/{name}.py is not a dataset module '
                    '(it has no load(config))')
  return module.load(config)


def input_reader(kind: str):
  """The data module that turns new raw inputs into a trained run's model arrays, named
  by its run card's `preprocess.kind` (the module's own name, as `config.data.name` names
  a dataset module); None for a run on stored features (it reads .npz and .csv only).

  A reader module defines any of: `inputs_from_files(files, preprocess, arrays)` (media
  files), `inputs_from_waves(waves, names, preprocess, arrays)` (16 kHz waveforms),
  `inputs_from_conversations(path, preprocess)` -> (ids, arrays, {id: extra columns}),
  and `INPUTS`, what it reads in words; `READS_VIDEO` when its files may be video."""
  if not kind:
    return None
  if not isinstance(kind, str) or not kind.isidentifier():
    raise DataError(f'run.json: field preprocess.kind {kind!r} is not a data module name')
  try:
    return importlib.import_module(f'affectjax.data.{kind}')
  except ModuleNotFoundError as e:
    if e.name == f'affectjax.data.{kind}':
      raise DataError(f'run.json: field preprocess.kind {kind!r}: no affectjax/data/{kind}.py '
                      '(a run of another affectjax version?)') from None
    raise


__all__ = ['ArraySource', 'Dataset', 'DataError', 'get_dataset', 'input_reader']
