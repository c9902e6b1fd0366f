import math

import pytest
import torch

import dropblock.sampling as sampling
from dropblock.rng import make_generator
from dropblock.sampling import bernoulli_positions
from stats import assert_can_see_bias, assert_close_se


def draws(n, gamma, reps, seed=0, device=torch.device("cpu")):
    gen = torch.Generator(device.type).manual_seed(seed)
    return [bernoulli_positions(n, gamma, device=device, generator=gen) for _ in range(reps)]


def test_positions_are_sorted_distinct_and_in_range(backend):
    for pos in draws(1000, 0.05, 200, device=backend):
        assert pos.dtype == torch.int64 and pos.device.type == backend.type
        assert torch.all(pos[1:] > pos[:-1])
        assert pos.numel() == 0 or (pos[0] >= 0 and pos[-1] < 1000)


def check_bernoulli(n, gamma, reps, seed=0, device=torch.device("cpu")):
    """Count ~ Binomial(n, gamma) (mean and variance), each position hit with probability gamma,
    and neighbours independent (P(i and i+1) = gamma^2)."""
    counts = torch.zeros(reps, dtype=torch.float64)
    hits = torch.zeros(n, dtype=torch.float64)
    pairs = 0.0
    for k, pos in enumerate(draws(n, gamma, reps, seed, device)):
        assert pos.device.type == device.type and bool((pos[1:] > pos[:-1]).all())
        pos = pos.cpu()
        counts[k] = pos.numel()
        hits[pos] += 1
        flags = torch.zeros(n, dtype=torch.bool)
        flags[pos] = True
        pairs += float((flags[1:] & flags[:-1]).sum())
    mean, var = n * gamma, n * gamma * (1 - gamma)
    se_mean = math.sqrt(var / reps)
    assert_can_see_bias(mean, se_mean)
    assert_close_se(counts.mean().item(), mean, se_mean, what="seed count")
    # variance of the count: se of a sample variance ~ var * sqrt(2 / (reps - 1)) (near-normal counts)
    assert_close_se(counts.var().item(), var, var * math.sqrt(2 / (reps - 1)), what="seed count variance")
    # every position equally likely: hits per position ~ Binomial(reps, gamma); pool the z-scores
    z = (hits - reps * gamma) / math.sqrt(reps * gamma * (1 - gamma))
    assert_close_se(float((z * z).mean()), 1.0, math.sqrt(2 / n), what="per-position chi-square / n")
    # independence of neighbours
    pair_p = gamma * gamma
    trials = reps * (n - 1)
    assert_close_se(pairs / trials, pair_p, math.sqrt(pair_p * (1 - pair_p) / trials * 3), what="adjacent pairs")


def test_seeds_have_the_bernoulli_distribution(backend):
    check_bernoulli(n=2000, gamma=0.02, reps=3000, device=backend)


def test_seeds_are_right_when_the_draw_runs_over_many_chunks(monkeypatch, backend):
    monkeypatch.setattr(sampling, "_draw_size", lambda left, gamma: 3)
    check_bernoulli(n=500, gamma=0.05, reps=3000, seed=1, device=backend)


def test_a_sampler_with_replacement_would_fail():
    """The same statistics reject a plausible shortcut: a Binomial count of positions drawn with replacement."""
    gen = torch.Generator().manual_seed(0)
    n, gamma, reps = 400, 0.2, 2000
    counts = []
    for _ in range(reps):
        k = int(torch.distributions.Binomial(n, torch.tensor(gamma)).sample())
        counts.append(torch.randint(0, n, (k,), generator=gen).unique().numel())
    counts = torch.tensor(counts, dtype=torch.float64)
    with pytest.raises(AssertionError):
        assert_close_se(counts.mean().item(), n * gamma, math.sqrt(n * gamma * (1 - gamma) / reps))


def test_edge_cases(backend):
    assert bernoulli_positions(0, 0.5, device=backend).numel() == 0
    assert bernoulli_positions(10, 0.0, device=backend).numel() == 0
    assert torch.equal(bernoulli_positions(10, 1.0, device=backend).cpu(), torch.arange(10))
    tiny = bernoulli_positions(10**9, 1e-8, device=backend, generator=torch.Generator(backend.type).manual_seed(0))
    assert 0 < tiny.numel() < 40 and int(tiny[-1]) < 10**9


def test_reproducible_with_a_generator():
    a = bernoulli_positions(10000, 0.01, generator=make_generator(7, "cpu"))
    b = bernoulli_positions(10000, 0.01, generator=make_generator(7, "cpu"))
    c = bernoulli_positions(10000, 0.01, generator=make_generator(8, "cpu"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert make_generator(None, "cpu") is None
