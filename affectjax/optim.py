"""The optimizer of a config: schedule, optimizer, clipping and parameter groups.

`config.optim.groups` is a tuple of `(pattern, scale)` rules over parameter paths
(`towers/audio/dense_0/kernel`; `pattern` is a regular expression that must match the
whole path). The first rule that matches a parameter decides: its updates are scaled by
`scale` (the same schedule, scaled), or, with `scale` 0, it is frozen (no update, no
optimizer state, and its gradient is left out of the clipping norm). Parameters no rule
matches train at the full rate. A config that fine-tunes a pretrained encoder at its own
rate says, e.g., `groups = (('encoder/.*', 0.05),)`.

Layer-wise learning-rate decay (`config.optim.layer_decay` < 1, BEiT's and the speech
encoders' fine-tuning recipe) scales, under `config.optim.layer_decay_prefix` (the
encoder's subtree, e.g. `towers/audio/speech/encoder`), block `layer_<i>` of L by
decay^(L - i), its final norm (`norm_out`) by 1 and everything else there (the stem:
convolutions, projections, positions) by decay^(L + 1); it multiplies the groups' scales.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import optax

from affectjax.errors import ConfigError


def path_str(path) -> str:
  """'a/b/c' for a jax tree path."""
  parts = []
  for k in path:
    parts.append(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))))
  return '/'.join(parts)


def check_groups(groups) -> list[tuple[re.Pattern, float]]:
  rules = []
  for i, rule in enumerate(groups or ()):
    if not isinstance(rule, (tuple, list)) or len(rule) != 2:
      raise ConfigError(f'config.optim.groups[{i}]: expected (pattern, scale), got {rule!r}')
    pattern, scale = rule
    try:
      compiled = re.compile(str(pattern))
    except re.error as e:
      raise ConfigError(f'config.optim.groups[{i}]: bad pattern {pattern!r} ({e})') from None
    if (not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale >= 0
        or scale == float('inf')):
      raise ConfigError(f'config.optim.groups[{i}]: scale must be a finite number >= 0 '
                        f'(0 freezes), got {scale!r}')
    rules.append((compiled, float(scale)))
  return rules


def group_labels(params, groups) -> object:
  """A tree like `params` of labels: 'frozen', 'default' or 'group<i>' (rule i)."""
  rules = check_groups(groups)

  def label(path, _):
    name = path_str(path)
    for i, (pattern, scale) in enumerate(rules):
      if pattern.fullmatch(name):
        return 'frozen' if scale == 0 else f'group{i}'
    return 'default'
  return jax.tree_util.tree_map_with_path(label, params)


_BLOCK = re.compile(r'(?:^|/)layer_(\d+)(?:/|$)')


def layer_scales(params, prefix: str, decay: float) -> dict[str, float]:
  """Path -> learning-rate scale of every parameter under `prefix` (see the module
  docstring); empty when nothing is there."""
  prefix = prefix.strip('/')
  paths = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  inside = {p: p[len(prefix) + 1:] for p in paths if p.startswith(prefix + '/')}
  blocks = {p: int(m.group(1)) for p, rest in inside.items() if (m := _BLOCK.search(rest))}
  if not blocks:
    return {}
  top = 1 + max(blocks.values())
  out = {}
  for p, rest in inside.items():
    depth = blocks[p] + 1 if p in blocks else top + 1 if rest.startswith('norm_out') else 0
    out[p] = float(decay) ** (top + 1 - depth)
  return out


def _check_layer_decay(c, params) -> dict[str, float]:
  decay, prefix = c.get('layer_decay', 1.0), c.get('layer_decay_prefix', '')
  if (not isinstance(decay, (int, float)) or isinstance(decay, bool) or not 0 < decay <= 1):
    raise ConfigError(f'config.optim.layer_decay: must be in (0, 1] (1 = off), got {decay!r}')
  if decay == 1:
    return {}
  if not isinstance(prefix, str) or not prefix.strip('/'):
    raise ConfigError('config.optim.layer_decay_prefix: name the subtree whose blocks decay '
                      '(e.g. towers/audio/speech/encoder)')
  if params is None:
    raise ValueError('make_optimizer: config.optim.layer_decay needs the parameter tree')
  scales = layer_scales(params, prefix, decay)
  if not scales:
    raise ConfigError(f'config.optim.layer_decay_prefix: {prefix!r} holds no layer_<i> blocks')
  return scales


def schedule(config) -> optax.Schedule:
  c = config.optim
  steps = config.train.num_steps
  if c.schedule == 'constant':
    return optax.constant_schedule(c.learning_rate)
  if c.schedule == 'cosine' and c.warmup_steps == 0:
    return optax.cosine_decay_schedule(c.learning_rate, steps)
  if c.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, c.learning_rate, c.warmup_steps,
                                              max(steps, c.warmup_steps + 1))
  if c.schedule == 'linear':
    return optax.join_schedules([
        optax.linear_schedule(0.0, c.learning_rate, c.warmup_steps),
        optax.linear_schedule(c.learning_rate, 0.0, max(steps - c.warmup_steps, 1))],
        [c.warmup_steps])
  raise ConfigError(f'config.optim.schedule: unknown {c.schedule!r} (constant | cosine | linear)')


def make_optimizer(config, params=None) -> optax.GradientTransformation:
  """The configured optimizer. `params` (a tree of arrays or shapes) is needed only when
  `config.optim.groups` has rules, to check that each rule matches something."""
  c = config.optim
  lr = schedule(config)
  if c.name == 'adamw':
    opt = optax.adamw(lr, weight_decay=c.weight_decay)
  elif c.name == 'adam':
    opt = optax.adam(lr)
  elif c.name == 'sgd':
    opt = optax.sgd(lr, momentum=0.9)
  else:
    raise ConfigError(f'config.optim.name: unknown {c.name!r} (adam | adamw | sgd)')
  groups = tuple(c.get('groups', ()) or ())
  rules = check_groups(groups)
  decays = _check_layer_decay(c, params)
  if decays:  # One masked scale per distinct depth: a handful of transforms.
    opt = optax.chain(opt, *[
        optax.masked(optax.scale(v), _paths_mask({p for p, x in decays.items() if x == v}))
        for v in sorted(set(decays.values())) if v != 1.0])
  if not rules:
    return optax.chain(optax.clip_by_global_norm(c.grad_clip), opt) if c.grad_clip > 0 else opt
  if params is None:
    raise ValueError('make_optimizer: config.optim.groups needs the parameter tree')
  labels = group_labels(params, groups)
  used = set(jax.tree.leaves(labels))
  for i, (pattern, scale) in enumerate(rules):
    if ('frozen' if scale == 0 else f'group{i}') not in used and not any(
        pattern.fullmatch(path_str(p)) for p, _ in jax.tree_util.tree_flatten_with_path(
            params)[0]):
      raise ConfigError(f'config.optim.groups[{i}]: pattern {pattern.pattern!r} matches no '
                        'parameter')
  scaled = [optax.masked(optax.scale(scale), _mask_fn(groups, f'group{i}'))
            for i, (_, scale) in enumerate(rules) if scale != 1.0 and scale != 0]
  train = optax.chain(opt, *scaled)
  if c.grad_clip > 0:
    train = optax.chain(optax.clip_by_global_norm(c.grad_clip), train)
  if 'frozen' not in used:
    return train
  # The frozen subtrees get neither updates nor state; clipping sees only the rest.
  return optax.multi_transform(
      {'train': train, 'frozen': optax.set_to_zero()},
      lambda p: jax.tree.map(lambda l: 'frozen' if l == 'frozen' else 'train',
                             group_labels(p, groups)))


def _paths_mask(paths: set[str]):
  return lambda p: jax.tree_util.tree_map_with_path(lambda q, _: path_str(q) in paths, p)


def _mask_fn(groups: Sequence, label: str):
  return lambda p: jax.tree.map(lambda l: l == label, group_labels(p, groups))
