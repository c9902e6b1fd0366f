"""`dropblock gamma` and the one-line errors of bad input, through typer's test runner."""

import json

import pytest

from clirun import run
from dropblock.conventions import convention_drop_rates
from dropblock.gamma import expected_drop_rate, gamma_exact
from stats import assert_close_se

def test_gamma_json_has_the_documented_keys_and_right_values():
    r = run("gamma", "--feature-size", "14", "--block-size", "7", "--keep-prob", "0.9", "--samples", "60000", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    for key in ("gamma_paper", "gamma_exact", "expected_drop_rate", "empirical_drop_rate", "empirical_se", "samples", "conventions"):
        assert key in out
    assert set(out["conventions"]) >= {"torchvision", "timm", "miguelvr", "tf"}
    assert out["gamma_paper"] == pytest.approx(0.00625)
    assert out["gamma_exact"] == pytest.approx(gamma_exact(0.1, 7, 14))
    assert out["expected_drop_rate"] == pytest.approx(expected_drop_rate(0.00625, 7, 14))
    assert out["samples"] == 60000
    assert_close_se(out["empirical_drop_rate"], out["expected_drop_rate"], out["empirical_se"], what="CLI measured rate")
    assert out["conventions"] == pytest.approx({k: v for k, v in convention_drop_rates(0.1, 7, 14).items()})


def test_gamma_exact_mode_measures_p():
    r = run("gamma", "-f", "28x14", "-b", "5", "-p", "0.2", "--gamma", "exact", "-n", "40000", "--json")
    out = json.loads(r.stdout)
    assert out["feature_size"] == [28, 14] and out["expected_drop_rate"] == pytest.approx(0.2)
    assert_close_se(out["empirical_drop_rate"], 0.2, out["empirical_se"])
    assert out["conventions"]["tf"] is None  # the authors' code refuses H != W


def test_gamma_table_names_every_row():
    r = run("gamma", "-n", "2000")
    assert r.exit_code == 0
    for text in ("paper gamma (Eq. 1), expected", "exact gamma, expected", "measured (2,000 masks)",
                 "torchvision", "timm", "miguelvr", "tensorflow/tpu", "keras-cv", "9.294%"):
        assert text in r.stdout


def test_gamma_sweep_and_plot(tmp_path):
    plot = tmp_path / "sweep.png"
    r = run("gamma", "-f", "10", "--sweep", "block-size", "-n", "500", "--plot", plot, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["values"] == list(range(1, 11)) and len(out["rows"]) == 10
    assert plot.stat().st_size > 10000
    r = run("gamma", "-f", "10", "-b", "3", "--sweep", "feature-size", "-n", "0")
    assert r.exit_code == 0 and "feature-size" in r.stdout


def test_gamma_impl_measures_an_installed_function():
    r = run("gamma", "-n", "20000", "--impl", "dropblock.functional:drop_block2d", "--json")
    out = json.loads(r.stdout)
    impl = out["impls"]["dropblock.functional:drop_block2d"]
    assert_close_se(impl["empirical_drop_rate"], out["expected_drop_rate"], impl["empirical_se"])


@pytest.mark.parametrize("args, code, text", [
    (["gamma", "--feature-size", "0"], 2, "--feature-size"),
    (["gamma", "--feature-size", "14x"], 2, "--feature-size"),
    (["gamma", "--block-size", "0"], 2, "--block-size"),
    (["gamma", "--block-size", "seven"], 2, "--block-size"),
    (["gamma", "--keep-prob", "0"], 2, "--keep-prob"),
    (["gamma", "--drop-rate", "1"], 2, "--drop-rate"),
    (["gamma", "--drop-rate", "0.1", "--keep-prob", "0.9"], 2, "not both"),
    (["gamma", "--samples", "-1"], 2, "--samples"),
    (["gamma", "--gamma", "median"], 2, "--gamma"),
    (["gamma", "--sweep", "p"], 2, "--sweep"),
    (["gamma", "--device", "tpu"], 2, "--device"),
    (["gamma", "--impl", "no_such_module:fn"], 2, "cannot import"),
    (["gamma", "--impl", "json"], 2, "MODULE:FUNCTION"),
    (["gamma", "--impl", "math:sqrt", "-n", "10"], 1, "failed"),
    (["gamma", "--plot", "out.gif"], 2, "--plot"),
    (["gamma", "--no-such-option"], 2, "--no-such-option"),
    (["no-such-command"], 2, "no-such-command"),
])
def test_bad_input_is_one_line_on_stderr_with_the_right_code(args, code, text):
    r = run(*args)
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropblock: error:") and text in lines[0], r.stderr
    assert "Traceback" not in r.output and r.stdout == ""


def test_cuda_request_without_a_gpu_is_a_usage_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = run("gamma", "--device", "cuda")
    assert r.exit_code == 2 and "no CUDA device" in r.stderr
