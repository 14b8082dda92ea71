"""Face and hand detection with MediaPipe's bundled models (no download at run time).

MediaPipe 0.10.21 ships its legacy-solution models inside the wheel: ``face_mesh``
(face detector + 468-point mesh + iris refinement = 478 points) and ``hands`` (palm
detector + 21-point hand landmarks). MediaPipe is optional (``pip install
headforge[preprocess]``); :func:`mediapipe_available` says whether it imports.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from types import TracebackType

import numpy as np

__all__ = [
    "MediaPipeUnavailableError",
    "mediapipe_available",
    "FaceDetection",
    "FaceDetector",
    "HandDetector",
]


class MediaPipeUnavailableError(RuntimeError):
    """MediaPipe is not installed (``pip install mediapipe==0.10.21``)."""


def mediapipe_available() -> bool:
    """True when ``mediapipe`` can be imported."""
    return importlib.util.find_spec("mediapipe") is not None


def _import_mediapipe():
    if not mediapipe_available():
        raise MediaPipeUnavailableError("face detection needs MediaPipe: pip install 'mediapipe==0.10.21'")
    import mediapipe

    return mediapipe


@dataclass
class FaceDetection:
    """One detected face.

    Attributes:
        points: (478, 3) float32 MediaPipe points; x, y in pixels, z in pixels (relative depth).
        box: (4,) x0, y0, x1, y1 pixel bounds of the 468 surface points.
    """

    points: np.ndarray
    box: np.ndarray

    @property
    def size(self) -> float:
        """Longer side of the landmark box in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


class FaceDetector:
    """MediaPipe face mesh with iris refinement; faces sorted largest first.

    Args:
        max_faces: most faces reported per image.
        min_confidence: detector confidence threshold.
        video: track across consecutive frames (``static_image_mode=False``).
    """

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5, video: bool = False) -> None:
        mp = _import_mediapipe()
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
        )

    def _detect_window(self, image: np.ndarray, x0: int, y0: int) -> list[FaceDetection]:
        height, width = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image[..., :3]))
        faces = []
        for face in result.multi_face_landmarks or []:
            raw = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
            points = raw * np.array([width, height, width], dtype=np.float32) + np.array(
                [x0, y0, 0], np.float32
            )
            surface = points[:468, :2]
            faces.append(FaceDetection(points, np.concatenate([surface.min(0), surface.max(0)])))
        return faces

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Faces in an (H, W, 3) uint8 RGB image, largest first (empty list: none).

        MediaPipe letterboxes the whole image into its detector's small square input, which
        misses faces in wide or tall images; square windows of the shorter side (half
        overlapping) are searched as well and duplicates (a centre inside a kept box) dropped.
        """
        height, width = image.shape[:2]
        faces = self._detect_window(image, 0, 0)
        side = min(height, width)
        if max(height, width) > 1.2 * side:
            steps = int(np.ceil((max(height, width) - side) / (side / 2))) + 1
            for offset in np.linspace(0, max(height, width) - side, steps).round().astype(int):
                x0, y0 = (int(offset), 0) if width > height else (0, int(offset))
                faces += self._detect_window(image[y0 : y0 + side, x0 : x0 + side], x0, y0)
        kept: list[FaceDetection] = []
        for face in sorted(faces, key=lambda f: -f.size):
            cx, cy = (face.box[:2] + face.box[2:]) / 2
            if not any(k.box[0] <= cx <= k.box[2] and k.box[1] <= cy <= k.box[3] for k in kept):
                kept.append(face)
        return kept

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


class HandDetector:
    """MediaPipe hands: (21, 2) pixel landmarks per detected hand."""

    def __init__(self, max_hands: int = 2, min_confidence: float = 0.5, video: bool = False) -> None:
        mp = _import_mediapipe()
        self._hands = mp.solutions.hands.Hands(
            static_image_mode=not video, max_num_hands=max_hands, min_detection_confidence=min_confidence
        )

    def detect(self, image: np.ndarray) -> list[np.ndarray]:
        """Hands in an (H, W, 3) uint8 RGB image as (21, 2) float32 pixel arrays."""
        height, width = image.shape[:2]
        result = self._hands.process(np.ascontiguousarray(image[..., :3]))
        hands = []
        for hand in result.multi_hand_landmarks or []:
            xy = np.array([(p.x, p.y) for p in hand.landmark], dtype=np.float32)
            hands.append(xy * np.array([width, height], dtype=np.float32))
        return hands

    def close(self) -> None:
        self._hands.close()

    def __enter__(self) -> HandDetector:
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, trace: TracebackType | None) -> None:
        self.close()
