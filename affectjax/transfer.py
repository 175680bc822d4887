"""Starting a run from other weights: `config.init`, applied after random initialisation.

  config.init.workdir     another affectjax run (its config need not equal this one)
  config.init.checkpoint  'best' (the validation-selected parameters) or 'latest'
  config.init.map         ((source_subtree, target_subtree), ...): which parts of the
                          source go where; () loads the whole tree onto the whole model
  config.init.dont_load   regular expressions of target paths left at their random
                          initialisation (e.g. a new classifier head)
  config.init.hf          ((target_subtree, source), ...): pretrained encoders, applied
                          after the workdir, in order: BERT-family text encoders (a
                          Hugging Face folder; '' = all-MiniLM-L6-v2) and speech encoders
                          (whisper-base, a Whisper / wav2vec2 / HuBERT / data2vec-audio /
                          WavLM Hugging Face folder, or a CTranslate2 Whisper folder;
                          affectjax/encoders/speech.py); the source '<data.encoder>'
                          stands for config.data.encoder, so a fine-tuning config loads
                          whichever encoder its data pipeline was given

Paths are '/'-joined parameter names (`towers/audio/dense_0/kernel`); a subtree is a path
prefix ('' is the root). Within each mapped pair the two subtrees must hold the same
parameters (after `dont_load`) with the same shapes: anything else is a one-line error
naming both paths. Everything loaded keeps the model's shardings and dtypes.
"""

from __future__ import annotations

import logging
import os
import re

import jax
import numpy as np

from affectjax.errors import ConfigError
from affectjax.optim import path_str

log = logging.getLogger('affectjax')


def _flat(tree) -> dict[str, object]:
  return {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _under(path: str, subtree: str) -> str | None:
  """`path` relative to `subtree`, or None when it is not inside it."""
  if not subtree:
    return path
  if path == subtree:
    return ''
  return path[len(subtree) + 1:] if path.startswith(subtree + '/') else None


def _join(subtree: str, rest: str) -> str:
  return '/'.join(p for p in (subtree, rest) if p)


def _pairs(value, field: str) -> list[tuple[str, str]]:
  out = []
  for i, item in enumerate(value or ()):
    if not isinstance(item, (tuple, list)) or len(item) != 2 or not all(
        isinstance(x, str) for x in item):
      raise ConfigError(f'config.init.{field}[{i}]: expected a pair of strings, got {item!r}')
    out.append((item[0].strip('/'), item[1].strip('/') if field == 'map' else item[1]))
  return out


DATA_ENCODER = '<data.encoder>'


def hf_sources(config) -> list[tuple[str, str]]:
  """`config.init.hf` with '<data.encoder>' resolved to `config.data.encoder`."""
  c = config.get('init')
  pairs = _pairs(c.get('hf', ()) if c is not None else (), 'hf')
  out = []
  for target, source in pairs:
    if source == DATA_ENCODER:
      source = config.data.get('encoder', '')
      if not source:
        raise ConfigError(f'config.init.hf: {target!r} loads {DATA_ENCODER} but '
                          'config.data.encoder is empty')
    out.append((target, source))
  return out


def _dont_load(patterns) -> list[re.Pattern]:
  out = []
  for i, p in enumerate(patterns or ()):
    try:
      out.append(re.compile(str(p)))
    except re.error as e:
      raise ConfigError(f'config.init.dont_load[{i}]: bad pattern {p!r} ({e})') from None
  return out


def check(config) -> None:
  """The config-only checks, before anything is built or read."""
  c = config.get('init')
  if c is None:
    return
  _pairs(c.get('map', ()), 'map')
  _pairs(c.get('hf', ()), 'hf')
  _dont_load(c.get('dont_load', ()))
  if c.get('workdir'):
    if c.get('checkpoint', 'best') not in ('best', 'latest'):
      raise ConfigError(f'config.init.checkpoint: {c.checkpoint!r} (best | latest)')
    if not os.path.isdir(c.workdir):
      raise ConfigError(f'config.init.workdir: no such directory: {c.workdir}')
  elif c.get('map') or c.get('dont_load'):
    raise ConfigError('config.init.map / dont_load: set config.init.workdir to load from')


def _place(target: dict, loaded: dict, new: dict, where: str, source_of: dict) -> None:
  for path, value in sorted(new.items()):
    old = target[path]
    value = np.asarray(value)
    if value.shape != tuple(old.shape):
      raise ConfigError(f'config.init: {where} {source_of[path]} has shape {value.shape} but '
                        f'this model\'s {path} has {tuple(old.shape)}')
    loaded[path] = jax.device_put(value.astype(old.dtype), old.sharding)


def apply(config, params):
  """`params` (this model's fresh parameters, sharded) with `config.init`'s sources put
  over them; returns the new tree (same structure, shardings and dtypes)."""
  check(config)
  c = config.get('init')
  if c is None or not (c.get('workdir') or c.get('hf')):
    return params
  target = _flat(params)
  loaded: dict[str, object] = {}
  skip = _dont_load(c.get('dont_load', ()))
  if c.get('workdir'):
    from affectjax import checkpoint as checkpoint_lib
    kind = c.get('checkpoint', 'best')
    ckpt = checkpoint_lib.Checkpoints(c.workdir)
    try:
      step, source = ckpt.load_params(kind)
    finally:
      ckpt.close()
    source = _flat(source)
    where = f'{c.workdir} ({kind} step {step})'
    new, source_of = {}, {}
    for src_sub, dst_sub in _pairs(c.get('map', ()), 'map') or [('', '')]:
      src = {rest: v for p, v in source.items() if (rest := _under(p, src_sub)) is not None}
      dst = {rest for p in target if (rest := _under(p, dst_sub)) is not None
             and not any(r.fullmatch(p) for r in skip)}
      if not src:
        raise ConfigError(f'config.init.map: {where} has no parameters under '
                          f'{src_sub or "the root"!r}')
      if not dst:
        raise ConfigError(f'config.init.map: this model has no parameters to load under '
                          f'{dst_sub or "the root"!r}')
      for rest in sorted(dst):
        if rest not in src:
          raise ConfigError(f'config.init: this model\'s {_join(dst_sub, rest)} has no '
                            f'counterpart {_join(src_sub, rest)} in {where}')
      extra = sorted(set(src) - dst - {_under(p, dst_sub) for p in target
                                       if any(r.fullmatch(p) for r in skip)})
      if extra:
        raise ConfigError(f'config.init: {where} {_join(src_sub, extra[0])} has no '
                          f'counterpart {_join(dst_sub, extra[0])} in this model (leave it '
                          'out of config.init.map, or add it to dont_load)')
      for rest in dst:
        new[_join(dst_sub, rest)] = src[rest]
        source_of[_join(dst_sub, rest)] = _join(src_sub, rest)
    _place(target, loaded, new, where, source_of)
    log.info('init: %d arrays from %s; %d left at their initialisation', len(new), where,
             len(target) - len(new))
  for dst_sub, folder in hf_sources(config):
    from affectjax.encoders import bert, speech
    if speech.is_speech_source(folder):
      tree, where = _flat(speech.resolve(folder, 'config.init.hf').params()), folder
    else:
      tree, where = _flat(bert.load_params(folder)), bert.check_folder(folder)
    paths = {p for p in target if _under(p, dst_sub) is not None}
    if not paths:
      raise ConfigError(f'config.init.hf: this model has no parameters under {dst_sub!r}')
    new, source_of = {}, {}
    for p in paths:
      rest = _under(p, dst_sub)
      if rest not in tree:
        raise ConfigError(f'config.init.hf: this model\'s {p} has no counterpart {rest} in '
                          f'{where}')
      new[p], source_of[p] = tree[rest], rest
    _place(target, loaded, new, where, source_of)
    log.info('init: %d arrays from %s into %s', len(new), where, dst_sub or 'the model')
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  return jax.tree_util.tree_unflatten(
      treedef, [loaded.get(path_str(p), x) for p, x in leaves])


def run_encoder(workdir: str, where: str) -> tuple[int, dict]:
  """(step, parameters) of the text encoder (`encoder` subtree) of the finished run in
  `workdir`, at its best-validation checkpoint; `where` names the setting in errors."""
  from flax import linen as nn
  from affectjax import checkpoint as checkpoint_lib
  if not os.path.exists(os.path.join(workdir, 'results.json')):
    raise FileNotFoundError(f'{where}: {workdir}/results.json: no finished run here; train '
                            'it first (affectjax train with the same config and workdir)')
  ckpt = checkpoint_lib.Checkpoints(workdir)
  try:
    step, params = ckpt.load_params('best')
  finally:
    ckpt.close()
  if 'encoder' not in params:
    raise ConfigError(f'{where}: {workdir}: the best checkpoint has no encoder subtree')
  return step, jax.tree.map(np.asarray, nn.unbox(params['encoder']))


def export_encoder(config, workdir: str, out: str) -> str:
  """Writes the text encoder of the finished fine-tuning run in `workdir` (its
  best-validation checkpoint, read from the checkpoint itself) as a Hugging Face folder
  `out` (`affectjax export-encoder`); `config` names the folder the encoder started from,
  whose tokenizer and config files go with it."""
  from affectjax.encoders import bert
  if config.data.get('text') != 'tokens':
    raise ConfigError(f'export-encoder: config {config.name!r} does not fine-tune a text '
                      'encoder (use an ERC config with :finetune)')
  _, params = run_encoder(workdir, 'export-encoder')
  return bert.save_folder(params, config.data.encoder, out)
