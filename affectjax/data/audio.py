"""Audio, once for every corpus: reading, resampling, trimming, caching and the front ends.

Every reader of speech (RAVDESS, EmoDB, raw clips, `affectjax predict`) goes through this
module, so a clip is decoded, resampled and trimmed the same way wherever it is used.

* Reading: WAV, FLAC and OGG through libsndfile (`soundfile`); anything else (MP3, M4A/AAC,
  the audio track of a video) through FFmpeg's decoders (PyAV). Mono float32 at 16 kHz
  (polyphase resampling).
* `trim_silence`: leading and trailing frames more than `top_db` below the clip's loudest.
* `decoded`: decoded, resampled, trimmed clips cached as one .npz keyed by the files' bytes
  (not their names, sizes or times: a file rewritten in place is decoded again).
* Front ends:
  - `log_mel`: 25 ms Hann windows, HTK-mel bands, natural log, optional per-clip
    standardisation (the from-scratch speech models, the MAE and contrastive studies);
  - `whisper_log_mel`: Whisper's own features (400-point periodic Hann STFT centred with
    reflection, hop 160, Slaney mel filters of 80 or 128 bands, log10 floored at 1e-10 and
    at the clip's maximum minus 8, then (x + 4) / 4), equal to the reference feature
    extractor to 1e-5; each clip of a batch from its own samples, so a clip's features do
    not depend on the batch it is in.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np

from affectjax.data.base import ComputedSource
from affectjax.errors import DataError

SAMPLE_RATE = 16000
SOUNDFILE_EXTENSIONS = ('.wav', '.flac', '.ogg')
# Extensions predict and the clip builder take as audio; the ones soundfile does not read
# go through PyAV.
AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.mp3', '.m4a', '.aac', '.opus')
# Quieter than this peak (-80 dBFS) is digital silence, not speech.
SILENCE_PEAK = 1e-4


def _av():
  try:
    import av
  except ImportError:
    raise DataError('audio: decoding this format needs PyAV (pip install av)') from None
  return av


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
  """`x` (float samples at `rate`) at `target` Hz, by polyphase filtering."""
  if rate == target:
    return np.asarray(x, np.float32)
  from scipy import signal
  g = math.gcd(int(rate), int(target))
  return signal.resample_poly(x, target // g, int(rate) // g).astype(np.float32)


def read_audio_track(path: str, rate: int = SAMPLE_RATE) -> np.ndarray:
  """The first audio stream of any file FFmpeg decodes (MP3, M4A, a video's sound),
  mono float32 at `rate`, or a DataError naming the file."""
  av = _av()
  chunks = []
  try:
    with av.open(path) as container:
      if not container.streams.audio:
        raise DataError(f'{path}: no audio track')
      resampler = av.AudioResampler(format='flt', layout='mono', rate=rate)
      for frame in container.decode(audio=0):
        chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(frame)]
      chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
  except av.FFmpegError as e:
    raise DataError(f'{path}: cannot decode audio ({type(e).__name__}: {e})') from None
  x = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
  return _checked(x, path)


def _checked(x: np.ndarray, path: str) -> np.ndarray:
  if not len(x):
    raise DataError(f'{path}: audio has no samples')
  if not np.all(np.isfinite(x)):
    raise DataError(f'{path}: audio has NaN/inf samples')
  return x


def read_audio(path: str, rate: int = SAMPLE_RATE) -> np.ndarray:
  """Mono float32 samples at `rate` of an audio file (WAV, FLAC, OGG through libsndfile;
  MP3, M4A and the rest through PyAV), or a DataError naming the file."""
  if not path.lower().endswith(SOUNDFILE_EXTENSIONS):
    return read_audio_track(path, rate)
  import soundfile
  try:
    x, sr = soundfile.read(path, dtype='float32', always_2d=True)
  except Exception as e:  # soundfile raises its own error types for corrupt files.
    raise DataError(f'{path}: cannot decode audio ({e})') from None
  return resample(_checked(x.mean(axis=1), path), sr, rate)


def check_audible(x: np.ndarray, where: str, min_samples: int) -> np.ndarray:
  """`x` unchanged, or a DataError when it is digital silence (peak below -80 dBFS) or
  shorter than `min_samples` (what the front end needs for one frame)."""
  if len(x) < min_samples:
    raise DataError(f'{where}: field audio has {len(x)} samples ({len(x) / SAMPLE_RATE:.3f} '
                    f's at 16 kHz after trimming); the front end needs at least {min_samples}')
  if not len(x) or float(np.max(np.abs(x))) < SILENCE_PEAK:
    raise DataError(f'{where}: field audio is silent (peak below -80 dBFS)')
  return x


def prepare_clip(x: np.ndarray, where: str, top_db: float, min_samples: int) -> np.ndarray:
  """A decoded clip as the training pipelines saw theirs: checked for digital silence,
  silence-trimmed, then checked to be at least `min_samples` long."""
  check_audible(x, where, 0)
  return check_audible(trim_silence(x, top_db), where, min_samples)


def trim_silence(x: np.ndarray, top_db: float = 40.0, frame: int = 400, hop: int = 160):
  """Drops leading and trailing frames more than `top_db` below the loudest frame."""
  if len(x) < frame:
    return x
  n = 1 + (len(x) - frame) // hop
  idx = np.arange(frame)[None] + hop * np.arange(n)[:, None]
  energy = 10 * np.log10(np.mean(x[idx] ** 2, axis=1) + 1e-10)
  loud = np.flatnonzero(energy > energy.max() - top_db)
  return x[loud[0] * hop:loud[-1] * hop + frame]


def pack(clips: list[np.ndarray], max_samples: int) -> tuple[np.ndarray, np.ndarray]:
  """(int16 waveforms (N, max_samples), lengths (N,)): each clip cut to `max_samples`,
  scaled to 16 bits and right-padded with zeros (a quarter of float32's memory)."""
  waves = np.zeros((len(clips), max_samples), np.int16)
  lengths = np.zeros(len(clips), np.int32)
  for i, x in enumerate(clips):
    x = x[:max_samples]
    waves[i, :len(x)] = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    lengths[i] = len(x)
  return waves, lengths


def unpack(waves: np.ndarray) -> np.ndarray:
  """float32 samples of `pack`'s int16 waveforms."""
  return waves.astype(np.float32) / 32767.0


def file_sha256(path: str) -> bytes:
  """SHA-256 of a file's bytes, read in 4 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      digest.update(block)
  return digest.digest()


def files_digest(files: list[str], settings: str = '') -> str:
  """A hash of the files' bytes (in order) and a settings string: what the caches of
  decoded audio and encoder features are keyed by."""
  digest = hashlib.sha256(settings.encode())
  for path in files:
    digest.update(file_sha256(path))
  return digest.hexdigest()[:24]


def cache_dir() -> str:
  return os.path.join(os.path.expanduser('~'), '.cache', 'affectjax')


def decoded(files: list[str], top_db: float) -> list[np.ndarray]:
  """Decoded, resampled, trimmed clips; cached once as one .npz (written atomically) keyed
  by the files' content and the trimming threshold."""
  from affectjax import workdir
  key = files_digest(files, json.dumps({'top_db': float(top_db), 'rate': SAMPLE_RATE}))
  path = os.path.join(cache_dir(), 'audio', f'{key}.npz')
  if os.path.exists(path):
    with np.load(path) as z:
      flat, offsets = z['samples'], z['offsets']
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
  from affectjax import progress
  clips = [trim_silence(read_audio(f), top_db) for f in progress.items(
      files, f'decoding {len(files)} audio files once (cached in {os.path.dirname(path)})')]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  workdir.write_atomic(path, 'the decoded-audio cache', lambda f: np.savez(
      f, samples=np.concatenate(clips), offsets=np.cumsum([0] + [len(c) for c in clips])),
      mode='wb')
  return clips


# -- the log-mel front end of the from-scratch models -----------------------------------------


def mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  """Triangular filters on the HTK mel scale, (n_fft // 2 + 1, n_mels)."""
  mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
  hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
  edges = hz(np.linspace(mel(0.0), mel(rate / 2), n_mels + 2))
  freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
  lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
  up = (freqs[:, None] - lower) / (center - lower)
  down = (upper - freqs[:, None]) / (upper - center)
  return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel(waves: np.ndarray, lengths: np.ndarray, *, rate: int = SAMPLE_RATE,
            window_ms: float = 25.0, hop_ms: float = 10.0, n_mels: int = 64,
            normalize: bool = True):
  """Log-mel frames of a batch of padded waveforms.

  Args:
    waves: (B, S) float samples, zero past `lengths`.
    lengths: (B,) samples per clip.
  Returns:
    (features (B, F, n_mels) float32, frame_mask (B, F) float32); features are
    zero at padded frames and, with `normalize`, have zero mean and unit variance
    per clip and band over the clip's real frames.
  """
  n_fft = int(rate * window_ms / 1000)
  hop = int(rate * hop_ms / 1000)
  num = 1 + (waves.shape[1] - n_fft) // hop
  idx = np.arange(n_fft)[None] + hop * np.arange(num)[:, None]
  frames = waves[:, idx] * np.hanning(n_fft + 1)[:-1].astype(np.float32)
  power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
  feats = np.log(power.astype(np.float32) @ mel_filterbank(rate, n_fft, n_mels) + 1e-6)
  real = 1 + np.maximum(lengths - n_fft, 0) // hop
  mask = (np.arange(num)[None] < real[:, None]).astype(np.float32)
  w = mask[..., None]
  if not normalize:
    return (feats * w).astype(np.float32), mask
  mean = (feats * w).sum(1, keepdims=True) / w.sum(1, keepdims=True)
  var = (((feats - mean) * w) ** 2).sum(1, keepdims=True) / w.sum(1, keepdims=True)
  return ((feats - mean) / np.sqrt(var + 1e-5) * w).astype(np.float32), mask


def band_statistics(waves: np.ndarray, lengths: np.ndarray, groups: np.ndarray,
                    feature_kwargs: dict, batch: int = 64):
  """Per-clip (mean, std) (N, n_mels): each group's (speaker's, or all training clips')
  log-mel statistics per band over the real frames of all its clips (no labels read)."""
  kwargs = dict(feature_kwargs, normalize=False)
  names = np.unique(groups)
  n_mels = int(kwargs.get('n_mels', 64))
  total = np.zeros((len(names), n_mels))
  square = np.zeros((len(names), n_mels))
  count = np.zeros(len(names))
  which = np.searchsorted(names, groups)
  for start in range(0, len(waves), batch):
    rows = slice(start, start + batch)
    feats, mask = log_mel(unpack(waves[rows]), lengths[rows], **kwargs)
    feats = feats.astype(np.float64)
    np.add.at(total, which[rows], feats.sum(1))  # Padded frames are zero.
    np.add.at(square, which[rows], (feats ** 2).sum(1))
    np.add.at(count, which[rows], mask.sum(1))
  mean = total / count[:, None]
  std = np.sqrt(np.maximum(square / count[:, None] - mean ** 2, 0.0) + 1e-5)
  return mean[which].astype(np.float32), std[which].astype(np.float32)


class LogMelSource(ComputedSource):
  """Waveforms in memory (int16, `pack`); `get_batch` returns log-mel frames (`audio`),
  `frame_mask` and `label` (plus any `extra` per-clip arrays, e.g. the same clip's face
  features), so the features are computed inside the grain pipeline, batch by batch."""

  def __init__(self, waves: np.ndarray, lengths: np.ndarray, labels: np.ndarray,
               feature_kwargs: dict, extra: dict[str, np.ndarray] | None = None,
               stats: tuple[np.ndarray, np.ndarray] | None = None):
    """`stats`: per-clip (mean, std) (N, n_mels) to standardise with instead of the
    clip's own (`band_statistics`)."""
    self.extra = tuple(extra or ())
    self.arrays = {'wave': waves, 'length': lengths, 'label': labels, **(extra or {})}
    if stats is not None:
      self.arrays['norm_mean'], self.arrays['norm_std'] = stats
    self.feature_kwargs = dict(feature_kwargs, normalize=stats is None and
                               feature_kwargs.get('normalize', True))
    self.stats = stats is not None

  def __len__(self) -> int:
    return len(self.arrays['label'])

  def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    waves = unpack(self.arrays['wave'][indices])
    feats, mask = log_mel(waves, self.arrays['length'][indices], **self.feature_kwargs)
    if self.stats:
      mean = self.arrays['norm_mean'][indices][:, None]
      std = self.arrays['norm_std'][indices][:, None]
      feats = ((feats - mean) / std * mask[..., None]).astype(np.float32)
    return {'audio': feats, 'frame_mask': mask, 'label': self.arrays['label'][indices],
            **{k: self.arrays[k][indices] for k in self.extra}}


# -- Whisper's front end --------------------------------------------------------------------

WHISPER_N_FFT = 400
WHISPER_HOP = 160


def _slaney_mel(f):
  f = np.asarray(f, np.float64)
  linear = 3.0 * f / 200.0
  log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
  return np.where(f >= 1000.0, log_part, linear)


def _slaney_hz(m):
  m = np.asarray(m, np.float64)
  return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), 200.0 * m / 3.0)


def slaney_filterbank(rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                      fmax: float | None = None) -> np.ndarray:
  """Triangular filters on the Slaney mel scale with Slaney (area) normalisation, the
  filters of librosa's default and of Whisper: (n_fft // 2 + 1, n_mels), float64."""
  fmax = rate / 2 if fmax is None else fmax
  edges = _slaney_hz(np.linspace(_slaney_mel(fmin), _slaney_mel(fmax), n_mels + 2))
  freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
  width = np.diff(edges)
  rise = (freqs[:, None] - edges[None, :-2]) / width[None, :-1]
  fall = (edges[None, 2:] - freqs[:, None]) / width[None, 1:]
  filters = np.maximum(0.0, np.minimum(rise, fall))
  return filters * (2.0 / (edges[2:] - edges[:-2]))[None]


def whisper_frames(num_samples) -> np.ndarray:
  """Log-mel frames Whisper's front end makes of `num_samples` samples (the centred STFT's
  last frame is dropped, as in Whisper)."""
  return np.asarray(num_samples) // WHISPER_HOP


def whisper_log_mel(waves: np.ndarray, lengths: np.ndarray, n_mels: int = 80,
                    pad_seconds: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
  """Whisper's log-mel features of a batch of padded waveforms.

  Args:
    waves: (B, S) float samples at 16 kHz, any value past `lengths`.
    lengths: (B,) real samples per clip.
    n_mels: 80 (tiny to large-v2) or 128 (large-v3).
    pad_seconds: 0: each clip's own samples only; 30: each clip zero-padded to 30 s first
      (Whisper's training input and the reference extractor's default).
  Returns:
    (features (B, F, n_mels) float32, frame_mask (B, F) float32): clip i's features are
    those of its own samples (computed as if it were alone), zero past its
    `whisper_frames(length)` frames; F is the longest clip's count.
  """
  lengths = np.asarray(lengths, np.int64)
  pad = int(round(pad_seconds * SAMPLE_RATE))
  total = np.maximum(lengths, pad) if pad else lengths
  frames = whisper_frames(total)
  out = np.zeros((len(lengths), int(frames.max()) if len(frames) else 0, n_mels), np.float32)
  filters = slaney_filterbank(SAMPLE_RATE, WHISPER_N_FFT, n_mels, 0.0, 8000.0)
  window = np.hanning(WHISPER_N_FFT + 1)[:-1]  # Periodic, as torch.hann_window.
  half = WHISPER_N_FFT // 2
  for i, (n, t) in enumerate(zip(lengths, total)):
    x = np.zeros(t, np.float64)
    x[:n] = waves[i, :n]
    if t <= half:
      raise DataError(f'whisper front end: a clip of {t} samples is too short (needs more '
                      f'than {half})')
    x = np.pad(x, half, mode='reflect')
    count = 1 + (len(x) - WHISPER_N_FFT) // WHISPER_HOP
    idx = np.arange(WHISPER_N_FFT)[None] + WHISPER_HOP * np.arange(count)[:, None]
    power = np.abs(np.fft.rfft(x[idx] * window, axis=-1)) ** 2
    spec = np.log10(np.maximum(power[:-1] @ filters, 1e-10))
    spec = np.maximum(spec, spec.max() - 8.0)
    out[i, :len(spec)] = (spec + 4.0) / 4.0
  mask = (np.arange(out.shape[1])[None] < frames[:, None]).astype(np.float32)
  return out, mask
