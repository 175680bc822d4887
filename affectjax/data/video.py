"""Video decoding for the clips pipeline: frames, evenly spaced samples, a face box.

Reads any container FFmpeg reads, through PyAV; finds the face with OpenCV's frontal-face
cascade (one square box per clip, the median of the sampled frames' boxes). Errors are
one line naming the file.
"""

from __future__ import annotations

import os

import numpy as np

from affectjax import errors

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.flv', '.webm', '.m4v')


def _av():
  try:
    import av
  except ImportError:
    raise errors.DataError('clips: decoding needs PyAV (pip install av)') from None
  return av


def read_video_frames(path: str) -> list[np.ndarray]:
  """Every frame of the first video stream as RGB uint8 (H, W, 3)."""
  av = _av()
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise errors.DataError(f'{path}: no video stream')
      frames = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]
  except av.FFmpegError as e:
    raise errors.DataError(f'{path}: cannot decode video ({type(e).__name__}: {e})') from None
  if not frames:
    raise errors.DataError(f'{path}: the video stream has no frames')
  return frames


def sample_indices(count: int, frames: int, path: str) -> np.ndarray:
  """`frames` evenly spaced frame indices (segment centres) of a `count`-frame clip."""
  if count < frames:
    raise errors.DataError(f'{path}: {count} video frames, fewer than the {frames} asked for')
  return ((np.arange(frames) + 0.5) * count / frames).astype(np.int64)


def _detector():
  import cv2
  cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades,
                                               'haarcascade_frontalface_default.xml'))
  if cascade.empty():
    raise errors.DataError('clips: OpenCV\'s face cascade is missing from this cv2 install '
                         '(use opencv-python-headless < 5)')
  return cascade


def face_box(frames: list[np.ndarray], path: str, margin: float) -> tuple[int, int, int]:
  """(centre x, centre y, side) of one square box around the face over the clip."""
  import cv2
  cascade, found = _detector(), []
  for frame in frames:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    least = max(24, min(gray.shape) // 8)
    boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                     minSize=(least, least))
    if len(boxes):
      x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
      found.append((x + w / 2, y + h / 2, max(w, h)))
  if not found:
    raise errors.DataError(f'{path}: no face found in any of the {len(frames)} sampled frames')
  cx, cy, side = np.median(np.asarray(found), axis=0)
  return int(round(cx)), int(round(cy)), max(2, int(round(side * margin)))


def crop_square(frame: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
  """The box (edge-padded where it leaves the frame)."""
  cx, cy, side = box
  x0, y0 = cx - side // 2, cy - side // 2
  h, w = frame.shape[:2]
  pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
  if pad:
    frame = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode='edge')
    x0, y0 = x0 + pad, y0 + pad
  return frame[y0:y0 + side, x0:x0 + side]


def center_square(frame: np.ndarray) -> np.ndarray:
  h, w = frame.shape[:2]
  side = min(h, w)
  return frame[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
