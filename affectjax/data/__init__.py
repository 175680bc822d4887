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
  try:
    module = importlib.import_module(f'affectjax.data.{name}')
  except ModuleNotFoundError as e:
    if e.name == f'affectjax.data.{name}':
      raise DataError(f'config.data.name: no dataset module affectjax/data/{name}.py') from None
    raise
  return module.load(config)


__all__ = ['ArraySource', 'Dataset', 'DataError', 'get_dataset']
