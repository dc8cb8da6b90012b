"""The GPT itself: shapes, causality, initialization, learning, and its parameter/FLOP counts."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from hpo.config.training import POS_ENCODINGS, GPTConfig
from hpo.errors import HpoError
from hpo.trainer.model import GPT


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Two intra-op threads on a shared 2-core machine can run 10-30x slower; one cannot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**overrides: object) -> GPTConfig:
    shape: dict[str, object] = dict(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=23)
    shape.update(overrides)
    return GPTConfig(**shape)  # type: ignore[arg-type]


def build(config: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


def test_pos_encodings_are_the_four_documented_ones() -> None:
    assert set(POS_ENCODINGS) == {"learned", "sinusoidal", "rope", "none"}


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_output_shapes(pos_encoding: str) -> None:
    config = tiny(pos_encoding=pos_encoding)
    model = build(config).eval()
    idx = torch.randint(config.vocab_size, (3, config.block_size))
    logits, loss = model(idx)
    assert logits.shape == (3, config.block_size, config.vocab_size)
    assert loss is None

    logits, loss = model(idx[:, :5], idx[:, 1:6])
    assert logits.shape == (3, 5, config.vocab_size)
    assert loss is not None and loss.shape == () and torch.isfinite(loss)


def test_sequence_longer_than_block_size_is_an_error() -> None:
    config = tiny()
    model = build(config)
    with pytest.raises(HpoError, match="block_size=16"):
        model(torch.zeros(1, config.block_size + 1, dtype=torch.long))


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_generate_extends_past_the_block_size(pos_encoding: str) -> None:
    config = tiny(pos_encoding=pos_encoding)
    model = build(config).eval()
    prompt = torch.zeros(2, 3, dtype=torch.long)
    out = model.generate(prompt, config.block_size + 4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3 + config.block_size + 4)
    assert torch.equal(out[:, :3], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < config.vocab_size


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_causality(pos_encoding: str) -> None:
    """Changing token t changes no logit before t (and does change the logits at t)."""
    config = tiny(pos_encoding=pos_encoding)
    model = build(config).eval()
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(config.vocab_size, (2, config.block_size), generator=gen)
    with torch.no_grad():
        base, _ = model(idx)
        for t in (0, 1, config.block_size // 2, config.block_size - 1):
            changed = idx.clone()
            changed[:, t] = (changed[:, t] + 1) % config.vocab_size
            logits, _ = model(changed)
            torch.testing.assert_close(logits[:, :t], base[:, :t], rtol=0, atol=1e-6)
            assert not torch.allclose(logits[:, t], base[:, t], atol=1e-4)


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
@pytest.mark.parametrize("n_embd", [32, 128])
def test_initial_loss_is_close_to_uniform(pos_encoding: str, n_embd: int) -> None:
    config = tiny(pos_encoding=pos_encoding, n_embd=n_embd, vocab_size=97)
    model = build(config).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(config.vocab_size, (16, config.block_size), generator=gen)
    y = torch.randint(config.vocab_size, (16, config.block_size), generator=gen)
    with torch.no_grad():
        _, loss = model(x, y)
    assert loss is not None
    assert abs(loss.item() - math.log(config.vocab_size)) < 0.1


def test_overfits_a_tiny_fixed_batch() -> None:
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=16)
    model = build(config)
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(config.vocab_size, (4, config.block_size + 1), generator=gen)
    x, y = data[:, :-1], data[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(300):
        _, loss = model(x, y)
        assert loss is not None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if loss.item() < 0.05:
            break
    assert losses[0] > 2.0  # random tokens over 16 symbols: nothing to predict at first
    assert min(losses) < 0.1


@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_every_pos_encoding_trains(pos_encoding: str, builtin) -> None:
    config = tiny(pos_encoding=pos_encoding, block_size=32, vocab_size=builtin.tokenizer.vocab_size)
    model = build(config)
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        x, y = builtin.train_batch(8, config.block_size, gen)
        _, loss = model(x, y)
        assert loss is not None
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, (first, last)


def real_param_count(model: GPT) -> int:
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in unique.values())


SHAPES = [
    dict(n_layer=1, n_head=1, n_embd=8, block_size=4, vocab_size=5),
    dict(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=65),
    dict(n_layer=3, n_head=2, n_embd=24, block_size=64, vocab_size=256),
    dict(n_layer=2, n_head=8, n_embd=64, block_size=32, vocab_size=103),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(str(v) for v in s.values()))
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_num_params_matches_the_model(shape: dict, bias: bool, pos_encoding: str) -> None:
    config = GPTConfig(**shape, bias=bias, pos_encoding=pos_encoding)
    model = GPT(config)
    assert model.lm_head.weight is model.wte.weight  # tied: counted once
    assert config.num_params() == real_param_count(model)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(str(v) for v in s.values()))
@pytest.mark.parametrize("pos_encoding", POS_ENCODINGS)
def test_flops_per_token(shape: dict, pos_encoding: str) -> None:
    config = GPTConfig(**shape, pos_encoding=pos_encoding)
    model = GPT(config)
    position_table = model.wpe.weight.numel() if model.wpe is not None else 0
    if pos_encoding == "learned":
        assert position_table == config.block_size * config.n_embd
    n = real_param_count(model)
    attention = 12 * config.n_layer * config.n_embd * config.block_size
    assert config.flops_per_token() == 6 * (n - position_table) + attention


def test_head_count_must_divide_width() -> None:
    with pytest.raises(HpoError) as info:
        GPTConfig(n_embd=30, n_head=4)
    assert "n_embd=30" in str(info.value)
    assert "n_head=4" in str(info.value)


def test_unknown_pos_encoding() -> None:
    with pytest.raises(HpoError, match="nope"):
        GPTConfig(pos_encoding="nope")  # type: ignore[arg-type]


def test_rope_needs_an_even_head_size() -> None:
    with pytest.raises(HpoError, match="rope"):
        GPTConfig(n_embd=12, n_head=4, pos_encoding="rope")
    GPTConfig(n_embd=12, n_head=4, pos_encoding="learned")  # odd head size is fine otherwise
    GPTConfig(n_embd=12, n_head=3, pos_encoding="rope")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_layer=0),
        dict(n_head=0),
        dict(n_embd=-4),
        dict(block_size=0),
        dict(vocab_size=-1),
        dict(dropout=1.0),
        dict(dropout=-0.1),
        dict(n_embd=5, n_head=1, pos_encoding="sinusoidal"),
    ],
)
def test_invalid_shapes_are_user_errors(kwargs: dict) -> None:
    with pytest.raises(HpoError):
        GPTConfig(**kwargs)


def test_model_needs_a_vocab_size() -> None:
    with pytest.raises(HpoError, match="vocab_size"):
        GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4))
