"""Several JAX processes as one mesh: joining the job, and a launcher for one machine.

A Cloud TPU slice larger than one host, or a GPU cluster, runs one process per host;
JAX's multi-controller runtime joins them into one set of global devices, and the
trainer's code is the same as on one process (each process reads its part of every
global batch; evaluation outputs are gathered; process 0 writes the workdir's files).

How a process learns its place, in this order:
  * `AFFECTJAX_COORDINATOR=HOST:PORT`, `AFFECTJAX_NUM_PROCESSES`, `AFFECTJAX_PROCESS_ID`
    (set by `affectjax launch`, or by hand on a cluster without auto-detection; the
    `--coordinator/--num-processes/--process-id` flags of `train` and `eval` set them);
  * `--distributed` with none of them: `jax.distributed.initialize()` detects the
    environment (Cloud TPU VMs, SLURM, Open MPI);
  * otherwise one process.

`affectjax launch --processes N -- train ...` starts N such processes on this machine on
a free loopback port, each with `--cpu-devices` virtual CPU devices, CPU collectives
through gloo: two processes of four devices make the same 8-device mesh as one process
of eight, which is how the multi-process path is tested without a cluster. Their log
lines come out prefixed `[pI]`; process 0's standard output is the launcher's. When one
process fails, the others are stopped and the launcher exits with its status and one
line saying which process failed and its last line of error output.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence

from affectjax import errors

ENV_COORDINATOR = 'AFFECTJAX_COORDINATOR'
ENV_NUM_PROCESSES = 'AFFECTJAX_NUM_PROCESSES'
ENV_PROCESS_ID = 'AFFECTJAX_PROCESS_ID'
ENV_CPU_DEVICES = 'AFFECTJAX_CPU_DEVICES'
# The launcher's process id, in the processes it starts (see `follow_launcher`).
ENV_LAUNCHER = 'AFFECTJAX_LAUNCHER_PID'
# Seconds without a heartbeat after which the coordination service declares a process
# dead (JAX's default is 100 s; also with --distributed); the launcher's runs use 10.
ENV_HEARTBEAT = 'AFFECTJAX_HEARTBEAT_S'


def initialize(auto_detect: bool = False, coordinator: str = '', num_processes: int = 0,
               process_id: int = -1) -> bool:
  """Joins the multi-process job, before any JAX computation; returns whether it did.

  Explicit arguments win over the environment variables, which win over
  auto-detection (only with `auto_detect`)."""
  coordinator = coordinator or os.environ.get(ENV_COORDINATOR, '')
  if not coordinator:
    if auto_detect:
      import jax
      jax.distributed.initialize(**_timeouts())
      return True
    return False
  try:
    num = num_processes or int(os.environ.get(ENV_NUM_PROCESSES, ''))
    pid = process_id if process_id >= 0 else int(os.environ.get(ENV_PROCESS_ID, ''))
  except ValueError:
    raise errors.ConfigError(f'{ENV_COORDINATOR}={coordinator}: also needs '
                             f'{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} (integers), or '
                             '--num-processes and --process-id') from None
  if not 0 <= pid < num:
    raise errors.ConfigError(f'process id {pid}: must be in [0, {num}) for {num} processes')
  host, sep, port = coordinator.rpartition(':')
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise errors.ConfigError(f'--coordinator {coordinator}: expected HOST:PORT with a port in '
                             f'1..65535 (or ${ENV_COORDINATOR})')
  import jax
  # CPU devices only: other platforms ignore these (one GPU or TPU host per process).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  devices = os.environ.get(ENV_CPU_DEVICES, '')
  if devices:
    jax.config.update('jax_num_cpu_devices', int(devices))
  jax.distributed.initialize(coordinator, num, pid, **_timeouts())
  return True


def follow_launcher(poll_s: float = 0.5) -> None:
  """In a process started by `affectjax launch`: a stop signal (SIGTERM) to itself as soon
  as the launcher is gone. A launcher killed outright (SIGKILL, the OOM killer) cannot
  pass a signal on, and its processes would train on as orphans; this way every process
  of the job gets SIGTERM at once, and training ones stop together at the next step
  boundary with a checkpoint, as on preemption. The variable is taken out of the
  environment, so the process's own subprocesses do not follow."""
  raw = os.environ.pop(ENV_LAUNCHER, '')
  if not raw.isdigit():
    return
  launcher = int(raw)

  def watch():
    while os.getppid() == launcher:
      time.sleep(poll_s)
    os.kill(os.getpid(), signal.SIGTERM)
  threading.Thread(target=watch, name='follow-launcher', daemon=True).start()


def _timeouts() -> dict:
  """$AFFECTJAX_HEARTBEAT_S, when set: how soon a silent process counts as dead (and
  three times it, at least a minute, for every process to join)."""
  raw = os.environ.get(ENV_HEARTBEAT, '')
  if not raw:
    return {}
  try:
    heartbeat = int(raw)
    if heartbeat <= 0:
      raise ValueError
  except ValueError:
    raise errors.ConfigError(f'{ENV_HEARTBEAT}={raw}: expected a positive number of '
                             'seconds') from None
  return {'heartbeat_timeout_seconds': heartbeat,
          'initialization_timeout': max(60, 3 * heartbeat)}


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _library_noise(line: str) -> bool:
  # gloo announces every connection it makes, a line each.
  return line.startswith('[Gloo]')


def launch(command: Sequence[str], processes: int, cpu_devices: int = 0,
           grace_s: float = 20.0, heartbeat_s: int = 10, env: dict | None = None,
           out=None, err=None, program: Sequence[str] = ()) -> int:
  """Runs `affectjax COMMAND` as `processes` processes of one job on this machine.

  Returns 0 when every process succeeded; otherwise raises `errors.LaunchError` naming the
  first process that failed, after stopping the rest (SIGTERM, which lets a training
  process save at its next step boundary; SIGKILL after `grace_s`). A process that
  dies without a word (killed) leaves the others blocked in a collective: they are
  stopped the same way, within `grace_s`. SIGINT or SIGTERM to the launcher is passed
  on to every process once; processes already stopping at a step boundary (status 3,
  `errors.EXIT_INTERRUPTED`) get no further signal, only `grace_s` to finish. `program`:
  what runs instead of `python -m affectjax` (a script's argv; the tests' multi-process
  checks)."""
  if processes < 1:
    raise errors.ConfigError(f'--processes {processes}: must be at least 1')
  if not command and not program:
    raise errors.ConfigError('launch: no command after --, e.g. '
                             'affectjax launch --processes 2 -- train --config ...')
  out = out or sys.stdout
  err = err or sys.stderr
  port = free_port()
  base = dict(os.environ if env is None else env)
  base.update({ENV_COORDINATOR: f'127.0.0.1:{port}', ENV_NUM_PROCESSES: str(processes),
               ENV_HEARTBEAT: str(heartbeat_s), ENV_LAUNCHER: str(os.getpid())})
  if cpu_devices:
    base[ENV_CPU_DEVICES] = str(cpu_devices)
  loud = base.get('AFFECTJAX_LIBRARY_LOGS', '') not in ('', '0')
  lock = threading.Lock()
  last_error: dict[int, str] = {}

  def pump(i: int, stream, sink, prefix: bool, is_err: bool):
    for line in iter(stream.readline, ''):
      if not loud and _library_noise(line):
        continue
      if is_err and line.strip():
        last_error[i] = line.strip()
      with lock:
        sink.write(f'[p{i}] {line}' if prefix else line)
        sink.flush()
    stream.close()

  procs, pumps = [], []
  for i in range(processes):
    p = subprocess.Popen([*(program or (sys.executable, '-m', 'affectjax')), *command],
                         env={**base, ENV_PROCESS_ID: str(i)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, bufsize=1,
                         # Their own session: Ctrl-C in a terminal reaches the launcher
                         # only, which passes it on once (a second SIGINT aborts a run).
                         start_new_session=True)
    procs.append(p)
    pumps += [threading.Thread(target=pump, args=(i, p.stdout, out if i == 0 else err,
                                                  i != 0, False), daemon=True),
              threading.Thread(target=pump, args=(i, p.stderr, err, True, True),
                               daemon=True)]
  for t in pumps:
    t.start()

  # Each exit is timed by its own waiter, so the process that failed first (the cause;
  # the others then fail in a collective, or abort) is the one named.
  exits: dict[int, tuple[float, int]] = {}

  forwarded = []

  def forward(signum, frame):
    del frame
    forwarded.append(signum)
    for i, p in enumerate(procs):
      if i not in exits:
        p.send_signal(signum)
  previous = {}
  if threading.current_thread() is threading.main_thread():
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}

  def wait(i, p):
    code = p.wait()
    exits[i] = (time.monotonic(), code)
  waiters = [threading.Thread(target=wait, args=(i, p), daemon=True)
             for i, p in enumerate(procs)]
  for t in waiters:
    t.start()
  stopped: list[int] = []
  try:
    while len(exits) < processes:
      codes = [code for _, code in list(exits.values())]
      if any(code != 0 for code in codes):
        stopped = [i for i in range(processes) if i not in exits]
        # Stopping at a step boundary (a passed-on signal, or one process's own): the
        # others stop at the same step; another signal now would abort their save.
        graceful = forwarded or errors.EXIT_INTERRUPTED in codes
        _stop([procs[i] for i in stopped], grace_s, signal_first=not graceful)
        if graceful:  # Only those killed after the grace period were stopped by us.
          stopped = [i for i in stopped if procs[i].wait() == -signal.SIGKILL]
        break
      time.sleep(0.05)
    for t in waiters + pumps:
      t.join(timeout=5)
  finally:
    # The launcher itself failing (an exception here) takes its processes with it.
    _stop([p for i, p in enumerate(procs) if i not in exits and p.poll() is None], grace_s)
    for s, h in previous.items():
      signal.signal(s, h)
  bad = sorted((t, i) for i, (t, code) in exits.items() if code != 0)
  if not bad:
    return 0
  failed = bad[0][1]
  code = exits[failed][1]
  how = _how(code)
  said = last_error.get(failed, '')
  rest = [f'stopped process {i}' for i in stopped]
  rest += [f'process {i} then {_how(exits[i][1])}' for _, i in bad[1:] if i not in stopped]
  raise errors.LaunchError(f'launch: process {failed} of {processes} {how}'
                    + (f' ({said})' if said else '') + ''.join(f'; {r}' for r in rest),
                    code if code > 0 else 1)


def _how(code: int) -> str:
  if code < 0 and -code in signal.valid_signals():
    return f'was killed by {signal.Signals(-code).name}'
  return f'exited with status {code}'


def _stop(procs, grace_s: float, signal_first: bool = True) -> None:
  if signal_first:
    for p in procs:
      p.send_signal(signal.SIGTERM)
  deadline = time.time() + grace_s
  for p in procs:
    try:
      p.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()
