"""Corpora, tokenizers, the train/validation split and the batches a trial sees.

Every trial of a study must see the same validation tokens, or accuracies would not be
comparable: the split is a fixed cut (the last `val_fraction` of the tokens, as nanoGPT
does), the validation set is the first `val_tokens` predicted positions of that split
in non-overlapping windows, and the fingerprint hashes the tokenizer with every token
so a study can refuse to resume on different data.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hpo.config.training import DataConfig
from hpo.errors import HpoError


@dataclass(frozen=True)
class Tokenizer:
    """Character, byte or pre-tokenized ids; `vocab` holds the characters of a char tokenizer."""

    kind: Literal["char", "byte", "ids"]
    vocab_size: int
    vocab: str = ""

    def encode(self, text: str) -> np.ndarray:
        if self.kind == "byte":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        if self.kind == "char":
            codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            table = _codepoints(self.vocab)
            ids = np.searchsorted(table, codes)
            unknown = (ids >= len(table)) | (table[np.minimum(ids, len(table) - 1)] != codes)
            if unknown.any():
                bad = chr(int(codes[np.argmax(unknown)]))
                raise HpoError(f"character {bad!r} is not in this tokenizer's vocabulary")
            return ids.astype(np.int64)
        raise HpoError("pre-tokenized (nanoGPT .bin) data has no text encoder; prompt with ids")

    def decode(self, ids: list[int]) -> str:
        if self.kind == "byte":
            return bytes(ids).decode("utf-8", errors="replace")
        if self.kind == "char":
            return "".join(self.vocab[i] for i in ids)
        return " ".join(map(str, ids))

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "vocab": self.vocab}


def _codepoints(vocab: str) -> np.ndarray:
    return np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)


@dataclass(frozen=True)
class Dataset:
    """Train and validation tokens of one corpus, with what identifies them."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: Tokenizer
    fingerprint: str

    def validation_set(self, block_size: int, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed validation windows: the first n_tokens predictions of the split.

        Non-overlapping windows from the start of the split, so every trial with the same
        block size scores on exactly the same tokens; no randomness involved.
        """
        available = (len(self.val) - 1) // block_size
        if available < 1:
            raise HpoError(
                f"model.block_size={block_size} is longer than the validation split "
                f"({len(self.val)} tokens); lower model.block_size or raise data.val_fraction"
            )
        count = min(available, -(-n_tokens // block_size))
        windows = np.lib.stride_tricks.sliding_window_view(self.val, block_size + 1)
        chunk = torch.from_numpy(np.ascontiguousarray(windows[: count * block_size : block_size]))
        chunk = chunk.long()
        return chunk[:, :-1], chunk[:, 1:]

    def train_batch(
        self, batch_size: int, block_size: int, generator: torch.Generator, rows: slice | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """batch_size random windows of the training split, drawn from the generator.

        `rows` keeps part of the batch: every rank of a data-parallel run draws the same
        global batch and trains on its own slice, so N ranks optimize exactly as one
        device with the whole batch would (the device count changes speed, not results).
        """
        high = len(self.train) - block_size
        if high < 1:
            raise HpoError(
                f"model.block_size={block_size} is longer than the training split "
                f"({len(self.train)} tokens); lower model.block_size or use a larger corpus"
            )
        starts = torch.randint(high, (batch_size,), generator=generator).numpy()[rows or slice(None)]
        windows = np.lib.stride_tricks.sliding_window_view(self.train, block_size + 1)
        chunk = torch.from_numpy(windows[starts]).long()
        return chunk[:, :-1], chunk[:, 1:]


def builtin_text() -> str:
    """Python's own bundled English text (the pydoc topics), in a fixed key order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def load_dataset(config: DataConfig) -> Dataset:
    """Read, tokenize, split and fingerprint the configured corpus."""
    source = config.source
    if source == "builtin":
        train, val, tokenizer = _split_text(builtin_text().encode("utf-8"), config, "builtin")
    elif source.startswith(("http://", "https://")):
        path = fetch_url(source, config.sha256, config.cache_dir)
        train, val, tokenizer = _split_text(path.read_bytes(), config, source)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise HpoError(
                f"data.source={source!r} does not exist; give a text file, a folder of .txt "
                "files, a folder with train.bin/val.bin, a URL, or builtin"
            )
        if path.is_dir() and (path / "train.bin").is_file():
            train, val, tokenizer = _load_bins(path, config)
        else:
            train, val, tokenizer = _split_text(_read_text_bytes(path), config, source)
    if len(val) < 2 or len(train) < 2:
        raise HpoError(f"data.source={source!r} has too few tokens to split; use a larger corpus")
    return Dataset(train, val, tokenizer, fingerprint(train, val, tokenizer))


def fingerprint(train: np.ndarray, val: np.ndarray, tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer and of every token, in a dtype-independent layout."""
    h = hashlib.sha256(json.dumps(tokenizer.to_dict(), sort_keys=True).encode())
    for part in (train, val):
        h.update(len(part).to_bytes(8, "little"))
        h.update(np.ascontiguousarray(part, dtype="<i8").tobytes())
    return h.hexdigest()


def _read_text_bytes(path: Path) -> bytes:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise HpoError(f"data.source={str(path)!r} is a folder without .txt files")
        return b"\n".join(p.read_bytes() for p in files)
    return path.read_bytes()


def _split_text(raw: bytes, config: DataConfig, name: str) -> tuple[np.ndarray, np.ndarray, Tokenizer]:
    if not raw.strip():
        raise HpoError(f"data.source={name!r} is empty; give a corpus with text in it")
    if config.tokenizer == "byte":
        tokens = np.frombuffer(raw, dtype=np.uint8)
        tokenizer = Tokenizer("byte", 256)
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HpoError(
                f"data.source={name!r} is not UTF-8 text (bad byte at offset {exc.start}); "
                "use data.tokenizer=byte for arbitrary bytes"
            ) from None
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.unique(codes)
        tokenizer = Tokenizer("char", len(table), table.tobytes().decode("utf-32-le"))
        tokens = np.searchsorted(table, codes).astype(np.uint16 if len(table) < 2**16 else np.int32)
    n_val = int(len(tokens) * config.val_fraction)
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :], tokenizer


def _load_bins(path: Path, config: DataConfig) -> tuple[np.ndarray, np.ndarray, Tokenizer]:
    """nanoGPT's uint16 token files. meta.pkl is never unpickled: it is untrusted code."""
    val_path = path / "val.bin"
    if not val_path.is_file():
        raise HpoError(f"{str(path)!r} has train.bin but no val.bin; add it or use a text source")
    train = np.memmap(path / "train.bin", dtype=np.uint16, mode="r")
    val = np.memmap(val_path, dtype=np.uint16, mode="r")
    if len(train) == 0 or len(val) == 0:
        raise HpoError(f"data.source={str(path)!r} has an empty train.bin or val.bin")
    seen = int(max(train.max(), val.max())) + 1
    vocab_size = config.vocab_size or seen
    if vocab_size < seen:
        raise HpoError(f"data.vocab_size={vocab_size} is below the largest token id + 1 ({seen})")
    return train, val, Tokenizer("ids", vocab_size)


def default_cache_dir() -> Path:
    return Path(os.environ.get("HPO_CACHE_DIR") or Path.home() / ".cache" / "hpo")


def fetch_url(url: str, sha256: str | None, cache_dir: str | None = None) -> Path:
    """Download url once into the cache, verified against its pinned sha256."""
    if not sha256:
        raise HpoError(
            f"data.source={url!r} needs a pinned data.sha256 (the file's `sha256sum`), "
            "so every worker trains on the same bytes"
        )
    sha256 = sha256.lower()
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = cache / "data" / f"{sha256[:16]}-{Path(url.split('?')[0]).name or 'download'}"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target  # verified again: a damaged cache file is downloaded anew
    cache.joinpath("data").mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                shutil.copyfileobj(response, tmp)
        # HTTPException: a malformed URL or a broken response; ValueError: a malformed URL.
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            os.unlink(tmp.name)
            reason = getattr(exc, "reason", exc)
            raise HpoError(
                f"cannot download {url} ({reason}); use data.source=builtin or a local file, "
                f"or place the file at {target}"
            ) from None
    digest = hashlib.sha256(Path(tmp.name).read_bytes()).hexdigest()
    if digest != sha256:
        os.unlink(tmp.name)
        raise HpoError(
            f"{url} has sha256 {digest}, not the pinned data.sha256={sha256}; check the URL or update the pin"
        )
    os.replace(tmp.name, target)
    return target
