"""Corpora, tokenizers, the fixed split and validation set, and every data source."""

from __future__ import annotations

import functools
import hashlib
import http.server
import pickle
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from study_helpers import free_port

from hpo.config.training import DataConfig
from hpo.errors import HpoError
from hpo.trainer.data import Dataset, builtin_text, load_dataset


def all_tokens(dataset: Dataset) -> np.ndarray:
    return np.concatenate([np.asarray(dataset.train), np.asarray(dataset.val)])


# --- builtin corpus, split, fingerprint -------------------------------------------------


def test_builtin_corpus_loads(builtin: Dataset) -> None:
    text = builtin_text()
    assert len(text) > 400_000
    assert builtin.tokenizer.kind == "char"
    assert builtin.tokenizer.vocab_size == len(set(text)) == len(builtin.tokenizer.vocab)
    assert len(builtin.train) + len(builtin.val) == len(text)
    assert len(builtin.val) == int(len(text) * 0.1)
    # The split is a cut: validation is the end of the corpus, training the start.
    assert builtin.tokenizer.decode(builtin.train[:200].tolist()) == text[:200]
    assert builtin.tokenizer.decode(builtin.val[-200:].tolist()) == text[-200:]
    assert np.array_equal(builtin.tokenizer.encode(text[:500]), builtin.train[:500])


def test_split_and_fingerprint_are_deterministic(builtin: Dataset) -> None:
    again = load_dataset(DataConfig())
    assert np.array_equal(again.train, builtin.train)
    assert np.array_equal(again.val, builtin.val)
    assert again.tokenizer == builtin.tokenizer
    assert again.fingerprint == builtin.fingerprint
    assert len(builtin.fingerprint) == 64


def test_fingerprint_changes_with_the_tokenizer(builtin: Dataset) -> None:
    by_bytes = load_dataset(DataConfig(tokenizer="byte"))
    assert by_bytes.tokenizer.kind == "byte" and by_bytes.tokenizer.vocab_size == 256
    assert len(all_tokens(by_bytes)) == len(builtin_text().encode("utf-8"))
    assert by_bytes.fingerprint != builtin.fingerprint


def test_fingerprint_changes_with_the_split(builtin: Dataset) -> None:
    assert load_dataset(DataConfig(val_fraction=0.2)).fingerprint != builtin.fingerprint


def test_fingerprint_changes_with_the_text(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog\n" * 50)
    first = load_dataset(DataConfig(source=str(path)))
    path.write_text("the lazy dog jumps over the quick brown fox\n" * 50)
    second = load_dataset(DataConfig(source=str(path)))
    assert second.tokenizer == first.tokenizer  # same characters, only the tokens differ
    assert second.fingerprint != first.fingerprint


def test_validation_set_is_fixed(builtin: Dataset) -> None:
    x, y = builtin.validation_set(64, 1000)
    assert x.shape == y.shape == (16, 64)  # ceil(1000 / 64) windows
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next tokens
    val = torch.from_numpy(builtin.val.astype(np.int64))
    # Non-overlapping windows from the start of the split.
    assert torch.equal(x[0], val[:64])
    assert torch.equal(x[1], val[64:128])
    assert torch.equal(y[-1], val[15 * 64 + 1 : 16 * 64 + 1])

    x2, y2 = builtin.validation_set(64, 1000)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, y3 = load_dataset(DataConfig()).validation_set(64, 1000)
    assert torch.equal(x, x3) and torch.equal(y, y3)


def test_validation_set_is_capped_by_the_split(builtin: Dataset) -> None:
    x, _ = builtin.validation_set(128, 10**9)
    assert len(x) == (len(builtin.val) - 1) // 128


def test_train_batch_is_reproducible(builtin: Dataset) -> None:
    a = builtin.train_batch(8, 32, torch.Generator().manual_seed(7))
    b = builtin.train_batch(8, 32, torch.Generator().manual_seed(7))
    c = builtin.train_batch(8, 32, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    x, y = a
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) < builtin.tokenizer.vocab_size


def test_block_size_longer_than_the_validation_split(builtin: Dataset) -> None:
    with pytest.raises(HpoError, match="block_size=100000"):
        builtin.validation_set(100_000, 1000)


def test_char_tokenizer_rejects_unknown_characters(builtin: Dataset) -> None:
    with pytest.raises(HpoError, match="vocabulary"):
        builtin.tokenizer.encode("\u2603")


# --- local files and folders ------------------------------------------------------------


def test_local_text_file(tmp_path: Path) -> None:
    text = "To be, or not to be: that is the question.\n" * 40
    path = tmp_path / "hamlet.txt"
    path.write_text(text, encoding="utf-8")
    dataset = load_dataset(DataConfig(source=str(path)))
    assert dataset.tokenizer.kind == "char"
    assert dataset.tokenizer.vocab == "".join(sorted(set(text)))
    assert dataset.tokenizer.decode(all_tokens(dataset).tolist()) == text


def test_folder_of_txt_files(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second file " * 30)
    (tmp_path / "a.txt").write_text("first file " * 30)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("nested file " * 30)
    (tmp_path / "notes.md").write_text("ZZZ not a txt file")
    dataset = load_dataset(DataConfig(source=str(tmp_path)))
    decoded = dataset.tokenizer.decode(all_tokens(dataset).tolist())
    assert decoded == "\n".join(["first file " * 30, "second file " * 30, "nested file " * 30])
    assert "Z" not in dataset.tokenizer.vocab


def test_byte_tokenizer_reads_any_bytes(tmp_path: Path) -> None:
    raw = bytes(range(256)) * 8
    path = tmp_path / "binary.txt"
    path.write_bytes(raw)
    dataset = load_dataset(DataConfig(source=str(path), tokenizer="byte"))
    assert dataset.tokenizer.vocab_size == 256
    assert bytes(all_tokens(dataset).astype(np.uint8).tolist()) == raw


# --- nanoGPT train.bin / val.bin --------------------------------------------------------


class _Payload:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_nanogpt_bins_load_without_unpickling_meta(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 500, size=5000).astype(np.uint16)
    val = rng.integers(0, 400, size=600).astype(np.uint16)
    train[123] = 731  # the largest id, in the training split only
    train.tofile(tmp_path / "train.bin")
    val.tofile(tmp_path / "val.bin")

    # The payload works: unpickling it elsewhere creates its marker...
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()
    # ...but loading the dataset never unpickles meta.pkl.
    marker = tmp_path / "pwned-marker"
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps(_Payload(marker)))

    dataset = load_dataset(DataConfig(source=str(tmp_path)))
    assert not marker.exists()
    assert dataset.tokenizer.kind == "ids"
    assert dataset.tokenizer.vocab_size == 732
    assert np.array_equal(dataset.train, train)
    assert np.array_equal(dataset.val, val)
    x, y = dataset.validation_set(16, 64)
    assert torch.equal(x[0], torch.from_numpy(val[:16].astype(np.int64)))
    assert torch.equal(y[0], torch.from_numpy(val[1:17].astype(np.int64)))
    assert load_dataset(DataConfig(source=str(tmp_path))).fingerprint == dataset.fingerprint

    assert load_dataset(DataConfig(source=str(tmp_path), vocab_size=1024)).tokenizer.vocab_size == 1024
    with pytest.raises(HpoError, match="vocab_size=100"):
        load_dataset(DataConfig(source=str(tmp_path), vocab_size=100))
    assert not marker.exists()


def test_nanogpt_bins_without_val(tmp_path: Path) -> None:
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "train.bin")
    with pytest.raises(HpoError, match=re.escape("val.bin")):
        load_dataset(DataConfig(source=str(tmp_path)))


# --- URL source -------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_server(directory: Path, requests: list[str]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving `directory`; yields its base URL."""
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def served_corpus(tmp_path: Path) -> tuple[Path, bytes, str]:
    site = tmp_path / "site"
    site.mkdir()
    body = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40).encode()
    (site / "shakespeare.txt").write_bytes(body)
    return site, body, hashlib.sha256(body).hexdigest()


def test_url_with_the_right_sha256_downloads_once(served_corpus, tmp_path: Path) -> None:
    site, body, digest = served_corpus
    cache = tmp_path / "cache"
    requests: list[str] = []
    with http_server(site, requests) as base:
        url = f"{base}/shakespeare.txt"
        first = load_dataset(DataConfig(source=url, sha256=digest, cache_dir=str(cache)))
        assert requests == ["/shakespeare.txt"]
    cached = list((cache / "data").iterdir())
    assert len(cached) == 1 and cached[0].read_bytes() == body
    assert first.tokenizer.decode(all_tokens(first).tolist()) == body.decode()

    # The server is gone: the second load must come from the cache.
    second = load_dataset(DataConfig(source=url, sha256=digest.upper(), cache_dir=str(cache)))
    assert requests == ["/shakespeare.txt"]
    assert second.fingerprint == first.fingerprint


def test_url_with_the_wrong_sha256(served_corpus, tmp_path: Path) -> None:
    site, _, digest = served_corpus
    wrong = "0" * 64
    cache = tmp_path / "cache"
    with http_server(site, []) as base, pytest.raises(HpoError) as info:
        load_dataset(DataConfig(source=f"{base}/shakespeare.txt", sha256=wrong, cache_dir=str(cache)))
    assert digest in str(info.value) and wrong in str(info.value)
    assert list((cache / "data").iterdir()) == []  # nothing unverified is kept


def test_url_without_sha256(served_corpus, tmp_path: Path) -> None:
    site, _, _ = served_corpus
    requests: list[str] = []
    with http_server(site, requests) as base, pytest.raises(HpoError, match="sha256"):
        load_dataset(DataConfig(source=f"{base}/shakespeare.txt", cache_dir=str(tmp_path / "cache")))
    assert requests == []


def test_unreachable_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/shakespeare.txt"
    with pytest.raises(HpoError) as info:
        load_dataset(DataConfig(source=url, sha256="a" * 64, cache_dir=str(tmp_path / "cache")))
    assert "builtin" in str(info.value)
    assert url in str(info.value)


def test_url_not_found(served_corpus, tmp_path: Path) -> None:
    site, _, digest = served_corpus
    with http_server(site, []) as base, pytest.raises(HpoError, match="builtin"):
        load_dataset(DataConfig(source=f"{base}/missing.txt", sha256=digest, cache_dir=str(tmp_path / "c")))


def test_malformed_url(tmp_path: Path) -> None:
    url = "http://127.0.0.1:notaport/corpus.txt"
    with pytest.raises(HpoError, match="notaport"):
        load_dataset(DataConfig(source=url, sha256="a" * 64, cache_dir=str(tmp_path / "cache")))


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Promises 10,000 bytes and sends 10: the connection drops mid-download."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "10000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_truncated_download(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TruncatingHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    cache = tmp_path / "cache"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/corpus.txt"
        # urllib may return the short body without an error; the pinned hash catches it then.
        with pytest.raises(HpoError, match=r"cannot download|sha256"):
            load_dataset(DataConfig(source=url, sha256="a" * 64, cache_dir=str(cache)))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert list((cache / "data").iterdir()) == []


# --- user mistakes ----------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(HpoError, match=re.escape("empty.txt")):
        load_dataset(DataConfig(source=str(path)))
    path.write_text("  \n\n\t ")
    with pytest.raises(HpoError, match="empty"):
        load_dataset(DataConfig(source=str(path)))


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.txt"
    with pytest.raises(HpoError, match=re.escape("nowhere.txt")):
        load_dataset(DataConfig(source=str(path)))


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1") * 50)
    with pytest.raises(HpoError) as info:
        load_dataset(DataConfig(source=str(path)))
    assert "latin1.txt" in str(info.value) and "tokenizer=byte" in str(info.value)
    dataset = load_dataset(DataConfig(source=str(path), tokenizer="byte"))
    assert dataset.tokenizer.kind == "byte"
    assert len(all_tokens(dataset)) == path.stat().st_size


def test_folder_without_txt_files(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("not a corpus")
    with pytest.raises(HpoError, match=tmp_path.name):
        load_dataset(DataConfig(source=str(tmp_path)))


def test_corpus_too_small_to_split(tmp_path: Path) -> None:
    path = tmp_path / "tiny.txt"
    path.write_text("abc")
    with pytest.raises(HpoError, match=re.escape("tiny.txt")):
        load_dataset(DataConfig(source=str(path)))


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(tokenizer="bpe"), "bpe"),
        (dict(val_fraction=0.0), "val_fraction=0.0"),
        (dict(val_fraction=1.0), "val_fraction=1.0"),
        (dict(val_tokens=0), "val_tokens=0"),
        (dict(source=""), "source"),
    ],
)
def test_bad_data_config(kwargs: dict, needle: str) -> None:
    with pytest.raises(HpoError, match=needle):
        DataConfig(**kwargs)
