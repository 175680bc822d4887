"""affectjax: train, evaluate and apply multimodal affect models (sentiment and emotion
from text, speech, faces and conversations), on a CPU, a GPU or a TPU slice.

  affectjax train   --config configs/NAME.py[:ARG] --workdir DIR [--config.a.b=v ...]
  affectjax compile --config configs/NAME.py[:ARG] --topology v5e:2x4 [--config.a.b=v ...]
  affectjax sweep   --config configs/NAME.py --grid a.b=1,2 [--grid ...] --seeds 5 --workdir DIR
  affectjax robustness --config configs/NAME.py[:ARG] --workdir DIR [--levels 0.5,1,2]
  affectjax extract-features --config configs/NAME.py[:ARG] [--out FILE.npz]
  affectjax export-encoder --config configs/NAME.py:finetune --workdir DIR --out FOLDER
  affectjax build-clips --input FOLDER [--labels ravdess|crema-d|none|FILE.csv] [--face]
  affectjax eval    --workdir DIR [--split test]
  affectjax predict --workdir DIR INPUT [INPUT ...] [--out FILE.jsonl|FILE.csv]
  affectjax sample-inputs --workdir DIR --out FILE.npz [--split test] [--count 8]
  affectjax launch  --processes N [--cpu-devices D] -- train --config ... --workdir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import pickle
import sys
import textwrap


def _parser() -> argparse.ArgumentParser:
  p = _Parser(prog='affectjax', description=__doc__,
              formatter_class=argparse.RawDescriptionHelpFormatter,
              epilog=textwrap.fill(
                  'Any config field can be overridden on the command line of train, '
                  'compile, sweep, robustness, extract-features and export-encoder: '
                  '--config.a.b=VALUE (e.g. --config.train.num_steps=500). '
                  '`affectjax COMMAND --help` for each command.', 88))
  from affectjax.version import __version__
  p.add_argument('--version', action='version', version=f'affectjax {__version__}')
  sub = p.add_subparsers(dest='command', required=True, parser_class=_Parser)
  train = sub.add_parser('train', help='train (or resume) one run in --workdir',
                         description='Trains one run, or resumes it from its last checkpoint '
                         '(rerun the same command after a stop or a crash). Override any '
                         'config field with --config.a.b=VALUE, e.g. '
                         '--config.train.num_steps=500 --config.model.dropout=0.1.')
  train.add_argument('--config', required=True, help='configs/NAME.py[:VARIANTS], or a '
                     'packaged config by name (synthetic:tfn, ravdess_whisper:fold1, ...)')
  train.add_argument('--workdir', required=True, help='folder for the run: config, '
                     'checkpoints, metrics, results.json (created; reused to resume)')
  _distributed_flags(train)
  comp = sub.add_parser('compile', help='ahead-of-time compile the train step for a '
                        'Cloud TPU topology (works on a CPU-only machine with libtpu)')
  comp.add_argument('--config', required=True, help='configs/NAME.py[:ARG]')
  comp.add_argument('--topology', required=True, help='e.g. v5e:2x4, v4:2x2x1, v5p:2x2x1')
  comp.add_argument('--batch-size', type=int, default=0,
                    help='global batch size (default: config.train.batch_size)')
  sw = sub.add_parser('sweep', help='grid of overrides x seeds, aggregated (CSV, table, plot)')
  sw.add_argument('--config', required=True)
  sw.add_argument('--grid', action='append', default=[], help='KEY=V1,V2,... (repeatable)')
  sw.add_argument('--seeds', type=int, default=3)
  sw.add_argument('--workdir', required=True)
  rb = sub.add_parser('robustness', help='test metrics of a trained run with each modality '
                      'absent, noisy (per-feature std) or partly dropped (features, time '
                      'steps, a block of steps)')
  rb.add_argument('--config', default='', help="the run's config (default: the one saved "
                  'in --workdir, config.json)')
  rb.add_argument('--workdir', required=True, help='a finished run')
  rb.add_argument('--levels', default='0.5,1,2',
                  help="noise std as multiples of each feature's training std")
  rb.add_argument('--fractions', default='0.25,0.5,0.75',
                  help='fractions of features / time steps dropped')
  ex = sub.add_parser('extract-features', help='frozen text-encoder embeddings of every '
                      'utterance of an ERC corpus, into the feature cache (and --out)')
  ex.add_argument('--config', required=True, help='an ERC config, e.g. '
                  'configs/erc.py:dialoguegcn')
  ex.add_argument('--out', default='', help='also write the (texts, embeddings) npz here')
  exp_enc = sub.add_parser('export-encoder', help='write the text encoder a finished '
                           'fine-tuning run chose (its best checkpoint) as a Hugging Face '
                           'folder, for frozen features through config.data.encoder')
  exp_enc.add_argument('--config', required=True, help='the run\'s config, e.g. '
                       'configs/erc.py:contextfree,finetune,utterance')
  exp_enc.add_argument('--workdir', required=True)
  exp_enc.add_argument('--out', required=True, help='new folder to write')
  bc = sub.add_parser('build-clips', help='decode a folder of raw clips (videos with audio, '
                      'or audio files) once into a TFDS ArrayRecord dataset that configs '
                      'with data.name=clips read (see affectjax/data/clips.py)')
  bc.add_argument('--input', required=True, help='folder of clips (searched recursively)')
  bc.add_argument('--labels', default='none', help='ravdess | crema-d | none | FILE.csv '
                  '(columns file,label[,speaker])')
  bc.add_argument('--modalities', default='audio,video', help='audio,video | audio | video')
  bc.add_argument('--frames', type=int, default=16, help='frames sampled per clip')
  bc.add_argument('--size', type=int, default=160, help='square frame size in pixels')
  bc.add_argument('--face', action='store_true', help='crop the face (OpenCV detector)')
  bc.add_argument('--max-seconds', type=float, default=4.0, help='audio kept per clip')
  bc.add_argument('--skip-bad', action='store_true',
                  help='leave out unreadable clips (and say how many) instead of stopping')
  bc.add_argument('--tfds-dir', default='', help='where to write (default '
                  '~/.cache/affectjax/tfds, as config.data.tfds_dir)')
  ev = sub.add_parser('eval', help="re-score a trained run's best checkpoint on one split "
                      '(no training; reads the data)')
  ev.add_argument('--workdir', required=True)
  ev.add_argument('--split', default='test')
  _distributed_flags(ev)
  pr = sub.add_parser('predict', help='apply a trained run to new inputs: audio files or '
                      'folders (speech runs), .npz or .csv feature files; needs only the '
                      'workdir')
  pr.add_argument('--workdir', required=True)
  pr.add_argument('inputs', nargs='+', help='files or folders')
  pr.add_argument('--out', default='-', help='FILE.jsonl or FILE.csv (default: JSONL on '
                  'stdout)')
  si = sub.add_parser('sample-inputs', help="write the first examples of a run's own "
                      'dataset split as a .npz that predict reads (a first input, and a '
                      'template of the fields and shapes the run expects)')
  si.add_argument('--workdir', required=True, help='a trained run')
  si.add_argument('--out', required=True, help='FILE.npz to write')
  si.add_argument('--split', default='test')
  si.add_argument('--count', type=int, default=8, help='examples to write')
  la = sub.add_parser('launch', help='run one command as N processes of one JAX job on '
                      'this machine (loopback, gloo CPU collectives): a local stand-in '
                      'for a multi-host slice')
  la.add_argument('--processes', type=int, required=True)
  la.add_argument('--cpu-devices', type=int, default=0,
                  help='virtual CPU devices per process (default: JAX\'s, one)')
  la.add_argument('--grace', type=float, default=20.0,
                  help='seconds the others get to stop when one process fails')
  la.add_argument('rest', nargs=argparse.REMAINDER, help='-- then the affectjax command')
  return p


def _distributed_flags(p) -> None:
  g = p.add_argument_group('several processes (one per host); see affectjax/distributed.py')
  g.add_argument('--distributed', action='store_true',
                 help='join a multi-process job: jax.distributed.initialize() detects '
                 'Cloud TPU, SLURM or Open MPI; run the same command on every host')
  g.add_argument('--coordinator', default='', help='HOST:PORT of process 0 (explicit, '
                 'without auto-detection; or $AFFECTJAX_COORDINATOR)')
  g.add_argument('--num-processes', type=int, default=0)
  g.add_argument('--process-id', type=int, default=-1)


def main(argv=None) -> int:
  """Runs one command; an expected error is one line on stderr and a status from
  `affectjax.errors` (2: bad input, 1: diverged, 3: interrupted, checkpoint saved).
  An unexpected error is a bug, and keeps its traceback."""
  argv = sys.argv[1:] if argv is None else list(argv)
  _quiet_libraries()
  from affectjax import errors
  try:
    with _stop_on_signals():
      _run(argv)
  except errors.LaunchError as e:
    how = 'stopped' if e.status == errors.EXIT_INTERRUPTED else 'error'
    print(f'affectjax: {how}: {errors.one_line(e)}', file=sys.stderr)
    return e.status
  except errors.Interrupted as e:
    print(f'affectjax: stopped: {errors.one_line(e)}', file=sys.stderr)
    return errors.EXIT_INTERRUPTED
  except errors.NonFiniteLossError as e:
    print(f'affectjax: error: {errors.one_line(e)}', file=sys.stderr)
    return errors.EXIT_DIVERGED
  except KeyboardInterrupt:
    print('affectjax: stopped: interrupted', file=sys.stderr)
    return errors.EXIT_INTERRUPTED
  except (errors.ExpectedError, ValueError, OSError, pickle.UnpicklingError) as e:
    print(f'affectjax: error: {errors.one_line(e)}', file=sys.stderr)
    return errors.EXIT_ERROR
  except (MemoryError, RuntimeError) as e:
    if not errors.is_out_of_memory(e):
      raise
    print(f'affectjax: error: out of memory ({type(e).__name__}); use smaller batches',
          file=sys.stderr)
    return errors.EXIT_ERROR
  return 0


def _quiet_libraries() -> None:
  """affectjax's own log lines at INFO; the libraries' (orbax, absl, asyncio) only with
  AFFECTJAX_LIBRARY_LOGS=1. A failed checkpoint write (a full disk) otherwise buries the
  one-line error under pages of orbax and asyncio task tracebacks, and the background
  threads it leaves report 'Event loop is closed' as unraisable exceptions."""
  from affectjax import hardware
  loud = hardware.library_logs()
  logging.basicConfig(level=logging.WARNING if loud else logging.CRITICAL,
                      format='%(asctime)s %(message)s', datefmt='%H:%M:%S')
  logging.getLogger('affectjax').setLevel(logging.INFO)
  if loud:
    return
  for name in ('absl', 'asyncio', 'orbax'):
    logging.getLogger(name).setLevel(logging.CRITICAL)
  log = logging.getLogger('affectjax.library')

  def unraisable(info):
    log.debug('ignored in %r: %r', info.object, info.exc_value)
  sys.unraisablehook = unraisable


def _run(argv) -> None:
  from affectjax import config as config_lib
  from affectjax import distributed
  distributed.follow_launcher()
  if argv[:1] == ['launch']:
    # The launched command's --config.a.b=v overrides belong to it, untouched.
    args = _parser().parse_args(argv)
    from affectjax import distributed
    rest = args.rest[1:] if args.rest[:1] == ['--'] else args.rest
    distributed.launch(rest, args.processes, args.cpu_devices, args.grace)
    return
  rest, overrides = config_lib.split_cli_overrides(argv)
  args = _parser().parse_args(rest)
  from affectjax import hardware
  if args.command == 'sweep':
    from affectjax import sweep
    hardware.start_jax()
    print(sweep.run(args.config, args.grid, args.seeds, args.workdir, overrides)['table'])
    return
  if args.command == 'build-clips':
    from affectjax.data import clips, prepared
    settings = clips.Settings(tuple(filter(None, args.modalities.split(','))), args.labels,
                              args.frames, args.size, args.face, max_seconds=args.max_seconds,
                              skip_bad=args.skip_bad)
    out = clips.build(args.input, settings,
                      args.tfds_dir or os.path.join(prepared.cache_dir(), 'tfds'))
    print(json.dumps({'clips': len(out.as_data_source()['clips']), 'dataset': out.data_dir}))
    return
  if args.command in ('train', 'eval'):
    from affectjax import distributed
    if distributed.initialize(args.distributed, args.coordinator, args.num_processes,
                              args.process_id):
      import jax
      if jax.process_index():  # One voice: the others say only what goes wrong.
        logging.getLogger('affectjax').setLevel(logging.WARNING)
  hardware.start_jax()
  if args.command == 'sample-inputs':
    if overrides:
      raise config_lib.ConfigError(f'sample-inputs: --config.{overrides[0]}: a trained run '
                                   'keeps its config (config.json in the workdir)')
    from affectjax import inference
    print(json.dumps(inference.write_sample_inputs(args.workdir, args.out, args.split,
                                                   args.count)))
    return
  if args.command in ('eval', 'predict'):
    if overrides:
      raise config_lib.ConfigError(f'{args.command}: --config.{overrides[0]}: a trained run '
                                   'keeps its config (config.json in the workdir)')
    from affectjax import inference
    if args.command == 'eval':
      print(json.dumps({args.split: _headline(inference.evaluate(args.workdir, args.split))}))
    else:
      inference.write_rows(inference.load_run(args.workdir).predict(args.inputs), args.out)
    return
  if args.command == 'robustness' and not args.config:
    from affectjax import runcard
    config = config_lib.apply_overrides(runcard.read_config(args.workdir), overrides)
  else:
    config = config_lib.load(args.config, overrides)
  if args.command == 'robustness':
    from affectjax import robustness
    try:
      levels = tuple(float(x) for x in args.levels.split(',') if x)
      if not levels or not all(math.isfinite(x) and x > 0 for x in levels):
        raise ValueError
    except ValueError:
      raise config_lib.ConfigError(f'--levels {args.levels}: expected finite numbers > 0, '
                                   'e.g. 0.5,1,2') from None
    try:
      fractions = tuple(float(x) for x in args.fractions.split(',') if x)
      if not fractions or not all(0 <= f <= 1 for f in fractions):
        raise ValueError
    except ValueError:
      raise config_lib.ConfigError(f'--fractions {args.fractions}: expected numbers in '
                                   '[0, 1], e.g. 0.25,0.5') from None
    print(robustness.evaluate_robustness(config, args.workdir, levels, fractions)['table'])
  elif args.command == 'train':
    from affectjax import train
    results = train.train_and_evaluate(config, args.workdir)
    print(json.dumps({'valid': _headline(results['valid']),
                      'test': _headline(results['test'])}))
  elif args.command == 'extract-features':
    from affectjax.data import erc
    if config.data.name != 'erc':
      raise config_lib.ConfigError(f'extract-features: {args.config} is not an ERC config '
                                   f'(config.data.name={config.data.name!r})')
    path = erc.extract_features(config)
    if args.out:
      import shutil
      shutil.copyfile(path, args.out)
    import numpy as np
    with np.load(path) as f:
      print(json.dumps({'cache': path, 'out': args.out or None,
                        'utterances': int(f['embeddings'].shape[0]),
                        'dim': int(f['embeddings'].shape[1])}))
  elif args.command == 'export-encoder':
    from affectjax import transfer
    out = transfer.export_encoder(config, args.workdir, args.out)
    print(json.dumps({'encoder': out, 'from': args.workdir}))
  elif args.command == 'compile':
    from affectjax import compile as compile_lib
    report = compile_lib.compile_for_topology(config, args.topology, args.batch_size)
    print(compile_lib.format_report(report))


@contextlib.contextmanager
def _stop_on_signals():
  """SIGTERM and SIGHUP stop every command as Ctrl-C does: one line and exit 3, instead of
  Python's silent default (exit 143). Training installs its own handlers over these (stop
  at a step boundary with a checkpoint); every file a command writes is written
  atomically, so a stop leaves none half written."""
  import signal
  import threading
  from affectjax import errors
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handle(signum, frame):
    del frame
    error = errors.Interrupted(f'{signal.Signals(signum).name}; rerun the same command to '
                               'start again')
    # Held while XLA compiles (no compile runs before preemption is imported).
    preemption = sys.modules.get('affectjax.preemption')
    if preemption is None:
      raise error
    preemption.raise_or_hold(error)
  previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGHUP)}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


class _ArgumentError(ValueError):
  pass


class _Help(argparse.HelpFormatter):
  """Each option's help ends with its default, where it has a real one."""

  def _get_help_string(self, action):
    text = action.help or ''
    if (action.default not in (None, '', False, argparse.SUPPRESS) and not action.required
        and action.option_strings and '%(default)' not in text):
      text += ' (default: %(default)s)'
    return text


class _Parser(argparse.ArgumentParser):
  """argparse that raises (one line, status 2 from main) instead of exiting."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault('formatter_class', _Help)
    super().__init__(*args, **kwargs)

  def error(self, message):
    raise _ArgumentError(f'{self.prog}: {message}')


def _headline(metrics: dict) -> dict:
  return {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}


if __name__ == '__main__':
  sys.exit(main())
