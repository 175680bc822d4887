"""Ahead-of-time compilation of the real train step for a Cloud TPU topology.

Runs on any machine with libtpu installed (`pip install -e '.[tpu]'`), no TPU
needed: `jax.experimental.topologies` describes the slice's devices, the
config's mesh is laid over them, and the same `Experiment.lower_train_step`
that training uses is compiled by the TPU compiler.
"""

from __future__ import annotations

import jax
import numpy as np

from affectjax import data as data_lib
from affectjax import preemption
from affectjax import sharding as sharding_lib
from affectjax import experiment as experiment_lib


def topology_devices(topology: str):
  """The devices of a TPU slice, e.g. 'v5e:2x4' (8 chips) or 'v4:2x2x1'."""
  from jax.experimental import topologies
  from affectjax import hardware
  try:
    with hardware.quiet_libtpu():
      desc = topologies.get_topology_desc(platform='tpu', topology_name=topology)
  except Exception as e:  # libtpu missing or an unknown name; say which.
    raise ValueError(f'--topology {topology}: cannot describe this TPU topology '
                     f'({type(e).__name__}: {" ".join(str(e).split())[:200]}); is libtpu '
                     "installed (pip install -e '.[tpu]')?") from None
  return desc.devices


def compile_for_topology(config, topology: str, batch_size: int = 0) -> dict:
  """Compiles init and the train step for `topology`; returns a memory/FLOPs report."""
  if batch_size < 0:
    raise ValueError(f'--batch-size {batch_size}: must be positive (or 0: the config\'s)')
  devices = topology_devices(topology)
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  dataset = data_lib.get_dataset(config)
  exp = experiment_lib.Experiment.for_dataset(config, mesh, dataset)
  batch_size = batch_size or config.train.batch_size
  split = sharding_lib.batch_devices(mesh, exp.rules)
  if batch_size % split:
    raise ValueError(f'--batch-size {batch_size}: not divisible by the batch\'s mesh axes on '
                     f'{topology} ({" x ".join(sharding_lib.batch_axes(exp.rules))}: {split} '
                     'devices)')
  compiled = preemption.compile(exp.lower_train_step(batch_size))
  preemption.compile(exp.lower_init())
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  report = {
      'topology': topology,
      'device_kind': devices[0].device_kind,
      'num_devices': len(devices),
      'mesh': dict(mesh.shape),
      'batch_size': batch_size,
      'num_params': exp.num_params,
      'flops_per_step': float(cost.get('flops', 0.0)) if cost else None,
      'param_bytes_per_device': state_bytes_per_device(exp.abstract_state.params),
      'opt_state_bytes_per_device': state_bytes_per_device(exp.abstract_state.opt_state),
  }
  if mem is not None:
    for field in ('argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes',
                  'generated_code_size_in_bytes', 'alias_size_in_bytes'):
      report[field] = int(getattr(mem, field, 0))
    report['peak_bytes_per_device'] = (report['argument_size_in_bytes'] +
                                       report['output_size_in_bytes'] +
                                       report['temp_size_in_bytes'] -
                                       report['alias_size_in_bytes'])
  return report


def state_bytes_per_device(abstract_tree) -> int:
  """Bytes of the largest shard of each array, summed: what one device holds of a tree
  of ShapeDtypeStructs with shardings (replicated arrays count whole)."""
  total = 0
  for x in jax.tree.leaves(abstract_tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += int(np.prod(shape)) * np.dtype(x.dtype).itemsize
  return total


def format_report(report: dict) -> str:
  lines = [f"compiled train step for {report['topology']} ({report['num_devices']} x "
           f"{report['device_kind']}), mesh {report['mesh']}, global batch "
           f"{report['batch_size']}, {report['num_params']:,} parameters"]
  if report.get('flops_per_step') is not None:
    lines.append(f"  FLOPs per step (per device program): {report['flops_per_step']:.4g}")
  for field in ('param_bytes_per_device', 'opt_state_bytes_per_device',
                'argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes',
                'alias_size_in_bytes', 'peak_bytes_per_device'):
    if field in report:
      lines.append(f'  {field.replace("_in_bytes", "").replace("_", " ")}: '
                   f'{report[field] / 2**20:.2f} MiB')
  return '\n'.join(lines)
