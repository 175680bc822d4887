"""Device mesh, logical-axis rules and the shardings derived from them.

Model code names *logical* axes only (`batch`, `hidden`, `fusion`, ...). This
module holds the one table that maps them to mesh axes; a config may put extra
rules in front of it (`config.mesh.rules`).

Three mesh axes: `data` (the batch is split, everything else replicated), `fsdp` (the
batch is split too, and so is every parameter and optimizer-state array: fully sharded
data parallelism, ZeRO-3 style, so per-device state memory falls as 1 / fsdp) and `model`
(the rules' tensor-parallel axes: heads, mlp, fusion outputs). FSDP needs no logical
names: each array is split over `fsdp` along its largest dimension that the axis
divides (after the rules' own axes), as big_vision's `fsdp` strategy does; an array
with no such dimension (a bias of odd size, a scalar) stays replicated. XLA gathers
each parameter where a step uses it and reduce-scatters its gradient.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'model')

# The one logical -> mesh table. Axes not listed (or mapped to None) replicate.
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ('batch', ('data', 'fsdp')),
    # Tensor fusion: the post-fusion / factor output features are split over `model`;
    # the (large, odd-sized) flattened outer-product axis stays whole.
    ('fusion_out', 'model'),
    ('mlp', 'model'),
    ('heads', 'model'),
    ('fusion_in', None),
    ('rank', None),
    ('embed', None),
    ('hidden', None),
    ('time', None),
    ('vocab', None),
    ('classes', None),
    # State-space layers: the SSM state dimension and the depthwise conv's taps.
    ('state', None),
    ('kernel', None),
    # Patch embeddings: the flattened patch (or tubelet) values.
    ('patch', None),
)


def axis_rules(config) -> tuple[tuple[str, Any], ...]:
  """The rules table with `config.mesh.rules` in front (first match wins)."""
  from affectjax.errors import ConfigError
  raw = config.mesh.get('rules', ()) or ()
  known = {name for name, _ in LOGICAL_AXIS_RULES}
  extra = []
  for rule in raw if isinstance(raw, (tuple, list)) else [raw]:
    if (not isinstance(rule, (tuple, list)) or len(rule) != 2
        or not isinstance(rule[0], str)):
      raise ConfigError(f'config.mesh.rules: {rule!r} is not a (logical axis, mesh axis) '
                        "pair, e.g. (('mlp', 'model'),)")
    logical, target = rule
    if logical not in known:
      raise ConfigError(f'config.mesh.rules: logical axis {logical!r} is not one the models '
                        f'name ({", ".join(sorted(known))})')
    targets = target if isinstance(target, (tuple, list)) else (target,)
    if any(t is not None and t not in MESH_AXES for t in targets):
      raise ConfigError(f'config.mesh.rules: {rule!r} maps to an unknown mesh axis (have '
                        f'{", ".join(MESH_AXES)}, or None)')
    extra.append((logical, tuple(target) if isinstance(target, list) else target))
  return tuple(extra) + LOGICAL_AXIS_RULES


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, ...]:
  """Resolves -1 in the config's axis sizes (an axis the config leaves out is 1);
  checks the product."""
  sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh: at most one axis may be -1, got {sizes}')
  known = int(np.prod([s for s in sizes if s != -1]))
  if known <= 0 or num_devices % known:
    raise ValueError(f'config.mesh: axis sizes {dict(zip(MESH_AXES, sizes))} do not '
                     f'divide the {num_devices} devices')
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f'config.mesh: {dict(zip(MESH_AXES, sizes))} uses '
                     f'{int(np.prod(sizes))} of {num_devices} devices')
  return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[Any] | None = None) -> Mesh:
  """The mesh named by `config.mesh` over `devices` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  try:
    # Topology-aware device order (ICI rings on TPU).
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
  except (AssertionError, NotImplementedError, ValueError):
    # e.g. v4 slices described per TensorCore rather than per megacore chip.
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


def logical_sharding(mesh: Mesh, rules, logical_axes: Sequence[str | None]) -> NamedSharding:
  return NamedSharding(mesh, nn.logical_to_mesh_axes(tuple(logical_axes), rules))


def batch_axes(rules) -> tuple[str, ...]:
  """The mesh axes the logical `batch` axis is split over under `rules` (first match)."""
  target = dict(reversed(rules)).get('batch')  # reversed: the first rule wins.
  if target is None:
    return ()
  return tuple(target) if isinstance(target, (tuple, list)) else (target,)


def batch_devices(mesh: Mesh, rules) -> int:
  """How many ways a global batch is split: the product of its mesh axes' sizes."""
  return int(np.prod([mesh.shape[a] for a in batch_axes(rules)], dtype=np.int64))


def batch_sharding(mesh: Mesh, rules, ndim: int) -> NamedSharding:
  """Leading axis over the data axis, the rest replicated."""
  return logical_sharding(mesh, rules, ('batch',) + (None,) * (ndim - 1))


def tree_shardings(mesh: Mesh, rules, abstract_tree):
  """NamedShardings for a pytree that may hold `nn.Partitioned` boxes."""
  # Frozen parameter groups leave boxes around optax's empty MaskedNode in the optimizer
  # state: they hold no array, so they get no sharding.
  abstract_tree = jax.tree.map(
      lambda x: x.value if isinstance(x, nn.Partitioned) and not jax.tree.leaves(x.value)
      else x, abstract_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  specs = nn.get_partition_spec(abstract_tree)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  if mesh.shape.get('fsdp', 1) == 1:
    return shardings
  return jax.tree.map(lambda x, s: NamedSharding(mesh, fsdp_spec(x.shape, s.spec, mesh)),
                      nn.meta.unbox(abstract_tree), shardings)


def fsdp_spec(shape: Sequence[int], spec: P, mesh: Mesh) -> P:
  """`spec` with the `fsdp` axis added to the largest dimension of `shape` that it
  divides (together with the axes already on that dimension); unchanged if none does."""
  n = mesh.shape['fsdp']
  entries = list(spec) + [None] * (len(shape) - len(spec))
  axes = [() if e is None else (tuple(e) if isinstance(e, (tuple, list)) else (e,))
          for e in entries]
  if any('fsdp' in a for a in axes):
    return spec
  best = None
  for d, size in enumerate(shape):
    used = int(np.prod([mesh.shape[a] for a in axes[d]]))
    if size % (used * n) == 0 and (best is None or size > shape[best]):
      best = d
  if best is None:
    return spec
  joined = (*axes[best], 'fsdp')
  entries[best] = joined[0] if len(joined) == 1 else joined
  return P(*entries)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
