"""The training loop shared by every model family.

config -> dataset -> sharded global batches -> model -> task loss -> optax ->
orbax checkpoints and metrics. One jitted train step with explicit shardings and
buffer donation; periodic validation; the best validation checkpoint gives the
final test metrics in `WORKDIR/results.json`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from affectjax import checkpoint as checkpoint_lib
from affectjax import config as config_lib
from affectjax import errors
from affectjax import experiment as experiment_lib
from affectjax import faults
from affectjax import hardware
from affectjax import optim
from affectjax import preemption
from affectjax import runcard
from affectjax import workdir as workdir_lib
from affectjax.data import pipeline


log = logging.getLogger('affectjax')
hardware.git_commit()  # The commit of the code this process loaded, for every run's record.


NonFiniteLossError = errors.NonFiniteLossError


def _scalars(metrics: dict, prefix: str) -> dict:
  return {f'{prefix}/{k}': v for k, v in metrics.items() if isinstance(v, (int, float))}


def _better(value: float, best: float | None, mode: str) -> bool:
  if best is None:
    return True
  return value > best if mode == 'max' else value < best


def _truncate_metrics(path: str, last_step: int) -> None:
  """Keeps the metrics.jsonl records up to `last_step` (a resumed run rewrites the rest).
  A line a kill or a full disk left half-written is dropped with them."""
  if not os.path.exists(path):
    return
  keep = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if isinstance(record, dict) and record.get('step', math.inf) <= last_step:
        keep.append(json.dumps(record) + '\n')
  if not keep:
    os.remove(path)
    return
  workdir_lib.write_atomic(path, 'the metrics log', lambda f: f.writelines(keep))


def _append_metrics(path: str, record: dict) -> None:
  line = json.dumps(record) + '\n'
  try:
    with open(path, 'a') as f:
      half = len(line) // 2
      f.write(line[:half])
      f.flush()
      faults.point('metrics_half_written')
      f.write(line[half:])
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    raise errors.write_error(path, f'the metrics record of step {record["step"]}', e) from None


@contextlib.contextmanager
def _memory(what: str):
  """Turns an out-of-memory failure of `what` into a one-line ResourceError."""
  try:
    yield
  except (MemoryError, RuntimeError) as e:
    if not errors.is_out_of_memory(e):
      raise
    raise errors.ResourceError(f'out of memory {what}') from None


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the results.json content.

  Every check that can fail on the config or the data (including compiling both steps
  and one evaluation batch) passes before anything is written to the workdir. The
  workdir is then locked for this process. SIGTERM/SIGINT/SIGHUP stop the run at the
  next step boundary with a checkpoint of that step (`errors.Interrupted`)."""
  experiment_lib.validate(config)
  results_path = os.path.join(workdir, 'results.json')
  extended = config_lib.check_workdir(config, workdir)
  if os.path.exists(results_path) and not os.path.exists(os.path.join(workdir, 'config.json')):
    # Results with no config to check them against: another run's, copied or half-deleted.
    raise errors.WorkdirError(f'{results_path}: results of a run whose config.json is not in '
                              'the workdir, so not known to be this run; use a new --workdir')
  if os.path.exists(results_path) and extended is None:
    log.info('%s exists: this run has finished', results_path)
    return _read_results(results_path)
  with preemption.signals() as stop:
    dataset, exp = experiment_lib.setup(config)
    t = config.train
    log.info('%s', header(config, dataset, exp, workdir))
    train_iter = pipeline.train_dataset(dataset.splits['train'], t.batch_size, config.seed,
                                        exp.mesh, exp.rules)
    compile_start = time.time()
    log.info('compiling the train and eval steps ...')
    with _memory(f'compiling the train step (config.train.batch_size={t.batch_size})'):
      train_step = preemption.compile(exp.lower_train_step(t.batch_size))
    with _memory(f'evaluating (config.train.eval_batch_size={t.eval_batch_size})'):
      eval_step = preemption.compile(exp.lower_eval_step(t.eval_batch_size))
      _first_eval_batch(exp, eval_step, dataset.splits['valid'], t.eval_batch_size)
    compile_s = time.time() - compile_start
    log.info('compiled in %.1f s', compile_s)
    # A fresh run builds its initial state (and so loads config.init's sources, with
    # their errors) before anything is written.
    initial = None if checkpoint_lib.has_checkpoint(workdir) else exp.init_state(config.seed)
    faults.point('compiled')

    workdir_lib.create(workdir)
    with workdir_lib.lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
      # Checked again under the lock: another process may have finished it meanwhile.
      extended = config_lib.check_workdir(config, workdir)
      if os.path.exists(results_path):
        if extended is None:
          return _read_results(results_path)
        # Extended: the shorter run's results stay beside it, and it trains on from its
        # last checkpoint.
        if jax.process_index() == 0:
          os.replace(results_path, os.path.join(workdir, f'results_{extended}_steps.json'))
        log.info('extending the run from %d to %d steps', extended, config.train.num_steps)
      return _train_locked(config, workdir, dataset, exp, train_iter, train_step, eval_step,
                           compile_s, stop, initial)


def header(config, dataset, exp, workdir: str) -> str:
  """The start-up lines: what is trained, on what, where."""
  sizes = ', '.join(f'{k} {len(v)}' for k, v in dataset.splits.items())
  mesh = ' x '.join(f'{k} {v}' for k, v in exp.mesh.shape.items())
  return (f'{config.get("name", "")}: {config.model.name} ({exp.num_params:,} parameters), '
          f'task {config.task.name}, {config.train.num_steps} steps of '
          f'{config.train.batch_size}; {jax.device_count()} x {jax.devices()[0].device_kind}'
          + (f' in {jax.process_count()} processes' if jax.process_count() > 1 else '')
          + f', mesh {mesh}; {dataset.where}: {sizes}; workdir {workdir}')


def _read_results(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise errors.WorkdirError(f'{path}: unreadable results ({errors.one_line(e)}); delete it '
                              'to evaluate the best checkpoint again') from None


def _first_eval_batch(exp, eval_step, source, batch_size: int) -> None:
  """One real evaluation batch with zero parameters: an eval batch too large for host or
  device memory fails here, before the workdir is written, not after the first steps."""
  local = next(iter(pipeline.eval_batches(source, batch_size, exp.mesh, exp.rules)))
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype, device=s.sharding),
                        exp.abstract_state.params)
  jax.block_until_ready(eval_step(params, pipeline.to_global(local, exp.mesh, exp.rules)))


def _train_locked(config, workdir, dataset, exp, train_iter, train_step, eval_step, compile_s,
                  stop, initial=None) -> dict:
  mesh, t = exp.mesh, config.train
  lead = jax.process_index() == 0
  results_path = os.path.join(workdir, 'results.json')
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  if lead:
    workdir_lib.remove_stale_temporaries(workdir)
  ckpt = checkpoint_lib.Checkpoints(workdir, t.keep_checkpoints)
  best_value, best_step, train_losses, train_aux = None, None, [], {}
  stop.deferring = True  # From here a signal waits for a step boundary.
  resume = ckpt.recover(exp.abstract_state, exp.abstract_state.params)
  if resume is not None:
    state, start = resume.state, resume.step
    train_iter.set_state(resume.data_state)
    best_value, best_step = resume.meta['best_value'], resume.meta['best_step']
    train_losses = list(resume.meta.get('train_losses', []))
    train_aux = {k: list(v) for k, v in resume.meta.get('train_aux', {}).items()}
    log.info('resumed from %s at step %d', ckpt.root, start)
  else:
    state = initial if initial is not None else exp.init_state(config.seed)
    start = 0
  if lead:
    _truncate_metrics(metrics_path, start)
    try:
      config_lib.save(config, os.path.join(workdir, 'config.json'))
      runcard.write_card(workdir, config, dataset, exp)  # What `affectjax predict` reads.
    except OSError as e:
      raise errors.write_error(os.path.join(workdir, 'config.json'), 'the config', e) from None

  writer = None
  if lead:
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))
  from tqdm import tqdm
  bar = tqdm(total=t.num_steps, initial=start, unit='step', dynamic_ncols=True,
             disable=not sys.stderr.isatty() or not lead)

  def meta():
    return {'best_value': best_value, 'best_step': best_step,
            'train_losses': [float(x) for x in train_losses],
            'train_aux': {k: [float(x) for x in v] for k, v in train_aux.items()}}

  def check(pending):
    for s, m in jax.device_get(pending):
      if not (math.isfinite(m['loss']) and math.isfinite(m['grad_norm'])):
        raise NonFiniteLossError(
            f'non-finite training loss {m["loss"]} (grad norm {m["grad_norm"]}) at step '
            f'{s}; stopped. {ckpt.last_good()}')
      train_losses.append(float(m['loss']))  # float64, as resumed from a checkpoint.
      for k, v in m['aux'].items():
        train_aux.setdefault(k, []).append(float(v))
      if writer:
        writer.add_scalar('train/loss', m['loss'], s)
        writer.add_scalar('train/grad_norm', m['grad_norm'], s)
        writer.add_scalar('train/learning_rate', float(learning_rate(s - 1)), s)
        for k, v in m['aux'].items():
          writer.add_scalar(f'train/{k}', v, s)

  step, pending = start, []
  loop_start = time.time()
  learning_rate = optim.schedule(config)
  rate_from = [start, loop_start]  # Throughput since the last log point.
  try:
    with _memory(f'training (config.train.batch_size={t.batch_size})'), _bar_safe_logging(bar):
      while step < t.num_steps:
        if stop.requested():
          check(pending)
          pending = []
          if ckpt.latest_step() != step and step > 0:
            ckpt.save(step, state, train_iter.get_state(), meta())
          raise errors.Interrupted(
              f'{stop.name()} at step {step}: '
              + (f'saved a checkpoint of step {step}' if step else 'nothing to save yet')
              + '; rerun the same command to resume')
        batch = pipeline.to_global(next(train_iter), mesh, exp.rules)
        state, step_metrics = train_step(state, batch)
        step += 1
        pending.append((step, step_metrics))
        if len(pending) > 1:
          # At most two steps in flight: deep async queues can starve XLA:CPU's
          # collective rendezvous when many virtual devices share few cores.
          pending[-2][1]['loss'].block_until_ready()
        faults.point('step')
        bar.update(1)
        is_eval = step % t.eval_every == 0 or step == t.num_steps
        if not (is_eval or step % t.log_every == 0):
          continue
        check(pending)
        pending = []
        bar.set_postfix(loss=f'{train_losses[-1]:.4f}')
        now = time.time()
        if writer and step > rate_from[0]:
          writer.add_scalar('train/examples_per_s',
                            (step - rate_from[0]) * t.batch_size / (now - rate_from[1]), step)
        rate_from[:] = [step, now]
        if not is_eval:
          continue
        with _memory(f'evaluating (config.train.eval_batch_size={t.eval_batch_size})'):
          valid = experiment_lib.evaluate(exp, eval_step, state.params, dataset.splits['valid'],
                           t.eval_batch_size, dataset.splits['train'])
        value = valid[t.select_metric]
        if not math.isfinite(valid.get('loss', value)):
          raise NonFiniteLossError(
              f'non-finite validation metrics at step {step} (loss '
              f'{valid.get("loss", value)}); stopped. {ckpt.last_good()}')
        record = {'step': step, 'train_loss': float(np.mean(train_losses)), 'valid': valid}
        if train_aux:
          record['train_aux'] = {k: float(np.mean(v)) for k, v in sorted(train_aux.items())}
        train_losses, train_aux = [], {}
        if lead:
          _append_metrics(metrics_path, record)
          faults.point('metrics_written')
          for k, v in _scalars(valid, 'valid').items():
            writer.add_scalar(k, v, step)
          writer.flush()
        log.info('step %d: train loss %.4f, valid %s %.4f', step, record['train_loss'],
                 t.select_metric, value)
        if _better(value, best_value, t.select_mode):
          best_value, best_step = value, step
          ckpt.save_best(step, state.params, {'step': step, t.select_metric: value})
        ckpt.save(step, state, train_iter.get_state(), meta())
  finally:
    bar.close()
    if writer:
      _close_writer(writer, workdir, failing=sys.exc_info()[1] is not None)
  train_s = time.time() - loop_start

  params = ckpt.restore_best(exp.abstract_state.params)
  with _memory(f'evaluating (config.train.eval_batch_size={t.eval_batch_size})'):
    results = {
        'config': config.name,
        'seed': config.seed,
        'best_step': best_step,
        'select_metric': t.select_metric,
        'num_params': exp.num_params,
        **{split: experiment_lib.evaluate(exp, eval_step, params, dataset.splits[split],
                                          t.eval_batch_size, dataset.splits['train'])
           for split in experiment_lib.eval_splits(config)},
        'timing': {'compile_s': compile_s, 'train_s': train_s,
                   'steps_this_invocation': t.num_steps - start},
        'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
        'provenance': hardware.provenance(config_lib.data_dir(config), dataset.where),
    }
  ckpt.close()
  workdir_lib.check_identity(workdir, ckpt.identity, 'before writing results.json')
  if lead:
    _final_tensorboard(workdir, config, results)
    from affectjax import plots
    plots.training_curves_png(metrics_path, t.select_metric, best_step,
                              os.path.join(workdir, 'curves.png'),
                              f'{config.name}, seed {config.seed}')
    # Figures that run the model do so on this process alone: one process of several
    # cannot run a program over the job's mesh by itself.
    exp.task.report(results, workdir, f'{config.name}, seed {config.seed}',
                    run=(config, lambda batch: exp.apply_eval(params, batch),
                         dataset.splits['test']) if jax.process_count() == 1 else None)
    def write(f):
      json.dump(results, f, indent=2, sort_keys=True)
      f.write('\n')
      f.flush()
      faults.point('results_tmp_written')
    workdir_lib.write_atomic(results_path, 'the results', write)
  return results


@contextlib.contextmanager
def _bar_safe_logging(bar):
  """Log lines printed above the progress bar instead of through it."""
  if bar.disable:
    yield
    return
  from tqdm.contrib.logging import logging_redirect_tqdm
  with logging_redirect_tqdm(loggers=[log]):
    yield


def _final_tensorboard(workdir: str, config, results: dict) -> None:
  """The best checkpoint's valid and test metrics at its step, and the run's
  hyperparameters with them, in TensorBoard."""
  from tensorboardX import SummaryWriter
  writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))
  try:
    step = results.get('best_step') or 0
    scalars = {}
    for split in experiment_lib.eval_splits(config):
      scalars.update(_scalars(results.get(split, {}), f'best/{split}'))
    for k, v in scalars.items():
      writer.add_scalar(k, v, step)
    flat = {k: json.loads(v) for k, v in config_lib.flat(config_lib.to_dict(config)).items()}
    hparams = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
               for k, v in flat.items()}
    writer.add_hparams(hparams, {f'hparam/{k}': v for k, v in scalars.items()},
                       name='hparams')
  except OSError as e:
    raise errors.write_error(os.path.join(workdir, 'tensorboard'), 'TensorBoard events',
                             e) from None
  finally:
    _close_writer(writer, workdir, failing=sys.exc_info()[1] is not None)


def _close_writer(writer, workdir: str, failing: bool) -> None:
  """Closes a TensorBoard writer. While another error is on its way out (a full disk that
  failed a checkpoint write, named in its message), the close's own failure, a bare
  errno from the same full disk, must not replace it."""
  try:
    writer.close()
  except Exception as e:  # pylint: disable=broad-except
    if failing:
      log.debug('closing the TensorBoard writer also failed: %r', e)
      return
    if isinstance(e, OSError) or 'No space left' in str(e):
      raise errors.write_error(os.path.join(workdir, 'tensorboard'), 'TensorBoard events',
                               e) from None
    raise


