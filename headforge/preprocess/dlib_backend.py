"""dlib as an alternative face detector, 68-landmark predictor and identity descriptor.

dlib (``pip install dlib-bin``: prebuilt wheels, no source build) provides the HOG + linear
SVM frontal face detector; ``face_recognition_models`` ships, inside its wheel, the iBUG
68-point shape predictor and the ResNet 128-d face descriptor model, so nothing is
downloaded at run time. Both are optional (``pip install 'headforge[preprocess]'``);
:func:`dlib_available` says whether they import.

Conventions (the same as :mod:`headforge.preprocess.detect`): images are (H, W, 3) uint8
RGB; pixel coordinates are continuous with the image's top-left corner at (0, 0), so the
centre of pixel (row i, column j) is (j + 0.5, i + 0.5). dlib reports integer pixel
indices (pixel centres), hence the +0.5 shift below.

dlib has no iris model. The two iris centres (landmarks 68 = left, 69 = right, the
subject's sides) are estimated as the centroid of each eye's six contour points: exact for
a centred gaze, off by the gaze's sideways shift otherwise (a fraction of an eye width).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from types import TracebackType

import numpy as np

__all__ = [
    "DlibUnavailableError",
    "dlib_available",
    "DlibFaceDetection",
    "DlibFaceDetector",
    "dlib_face_descriptor",
]

#: iBUG indices of the subject's right (image-left) and left eye contours.
RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)


class DlibUnavailableError(RuntimeError):
    """dlib or its models are not installed (``pip install dlib-bin face_recognition_models``)."""


def dlib_available() -> bool:
    """True when both ``dlib`` and ``face_recognition_models`` can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("dlib", "face_recognition_models"))


def _import_dlib():
    """(dlib module, shape predictor path, face descriptor model path)."""
    if not dlib_available():
        raise DlibUnavailableError(
            "the dlib detector needs dlib and its models: pip install dlib-bin face_recognition_models"
        )
    import warnings

    import dlib

    with warnings.catch_warnings():
        # face_recognition_models locates its files with the deprecated pkg_resources.
        warnings.simplefilter("ignore", UserWarning)
        import face_recognition_models as models

    return dlib, models.pose_predictor_model_location(), models.face_recognition_model_location()


@dataclass
class DlibFaceDetection:
    """One face found by dlib.

    Attributes:
        landmarks: (70, 2) float32 pixels: iBUG 68 + left and right iris centres (estimated,
            see the module doc), in the order of
            :func:`~headforge.preprocess.landmarks_map.mediapipe_to_ibug70`.
        box: (4,) x0, y0, x1, y1 pixel bounds of the 68 landmarks.
        detector_box: (4,) x0, y0, x1, y1 pixel bounds of dlib's detection rectangle.
        score: detector score (larger: more confident; 0 is the SVM's decision boundary).
    """

    landmarks: np.ndarray
    box: np.ndarray
    detector_box: np.ndarray
    score: float

    @property
    def size(self) -> float:
        """Longer side of the landmark box in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def ibug68(self) -> np.ndarray:
        """(68, 2) float32 pixel landmarks in iBUG order."""
        return self.landmarks[:68]


def _landmarks70(shape) -> np.ndarray:
    """dlib ``full_object_detection`` (68 parts) -> (70, 2) float32 continuous pixel coordinates."""
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32) + 0.5
    irises = np.stack([points[LEFT_EYE].mean(0), points[RIGHT_EYE].mean(0)])
    return np.concatenate([points, irises])


class DlibFaceDetector:
    """dlib HOG face detector + 68-point predictor; faces sorted most confident first.

    Same interface as :class:`headforge.preprocess.detect.FaceDetector` (``detect``,
    ``close``, context manager); detections are :class:`DlibFaceDetection`. One difference:
    faces are ranked by detector score, not size, because the HOG detector's false
    positives on textures can be as large as the real face (on ``skimage.data.astronaut()``
    a patch of her suit: 91 px, score 0.12, against her face: 93 px, score 1.16).

    Args:
        max_faces: most faces reported per image.
        upsample: times the image is doubled before detection (finds faces down to about
            80 / 2**upsample px; each step costs about 4x time).
        min_score: detector score threshold (the HOG SVM's margin; 0 is dlib's default).
    """

    def __init__(self, max_faces: int = 4, upsample: int = 1, min_score: float = 0.0) -> None:
        dlib, predictor_path, _ = _import_dlib()
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(predictor_path)
        self.max_faces = max_faces
        self.upsample = upsample
        self.min_score = min_score

    def detect(self, image: np.ndarray) -> list[DlibFaceDetection]:
        """Faces in an (H, W, 3) uint8 RGB image, most confident first (empty list: none)."""
        rgb = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
        rectangles, scores, _ = self._detector.run(rgb, self.upsample, self.min_score)
        faces = []
        for rectangle, score in zip(rectangles, scores, strict=True):
            landmarks = _landmarks70(self._predictor(rgb, rectangle))
            corners = (rectangle.left(), rectangle.top(), rectangle.right() + 1, rectangle.bottom() + 1)
            faces.append(
                DlibFaceDetection(
                    landmarks=landmarks,
                    box=np.concatenate([landmarks[:68].min(0), landmarks[:68].max(0)]),
                    detector_box=np.array(corners, dtype=np.float32),
                    score=float(score),
                )
            )
        return sorted(faces, key=lambda f: -f.score)[: self.max_faces]

    def close(self) -> None:
        """Nothing to release (dlib's models are plain objects); kept for interface parity."""

    def __enter__(self) -> DlibFaceDetector:
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


_DESCRIPTOR_MODELS: dict[str, object] = {}


def dlib_face_descriptor(image: np.ndarray, landmarks: np.ndarray, jitter: int = 0) -> np.ndarray:
    """dlib's 128-d face descriptor (ResNet metric embedding) of one face.

    dlib aligns a 150 px chip from the landmarks and embeds it; faces of the same person lie
    within about 0.6 (Euclidean) of each other by dlib's own convention. Descriptors are not
    normalised (norms 1.3 - 1.5 measured); compare them by Euclidean distance, as dlib does.

    Args:
        image: (H, W, 3) uint8 RGB.
        landmarks: (68, 2) or (70, 2) pixel landmarks in iBUG order, continuous convention
            (e.g. :attr:`DlibFaceDetection.landmarks`, or MediaPipe's mapped 70).
        jitter: extra randomly jittered chips averaged in (0: deterministic, dlib's default).
    Returns:
        (128,) float32 descriptor.
    """
    dlib, _, descriptor_path = _import_dlib()
    model = _DESCRIPTOR_MODELS.get(descriptor_path)
    if model is None:  # loading the ResNet takes ~0.2 s: once per process
        model = _DESCRIPTOR_MODELS[descriptor_path] = dlib.face_recognition_model_v1(descriptor_path)
    points = np.asarray(landmarks, dtype=np.float64)[:68] - 0.5  # back to dlib's pixel-centre indices
    x0, y0 = np.floor(points.min(0)).astype(int)
    x1, y1 = np.ceil(points.max(0)).astype(int)
    shape = dlib.full_object_detection(
        dlib.rectangle(int(x0), int(y0), int(x1), int(y1)),
        [dlib.point(int(round(x)), int(round(y))) for x, y in points],
    )
    rgb = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    return np.asarray(model.compute_face_descriptor(rgb, shape, jitter), dtype=np.float32)
