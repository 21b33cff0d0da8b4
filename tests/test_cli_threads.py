"""``--threads`` on every command that runs a model, and the default that does not oversubscribe."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.threads import cgroup_cpu_quota, chosen_threads, default_threads

runner = CliRunner()
MODEL_COMMANDS = ["generate", "run", "serve", "compare", "explain", "record", "bench"]


@pytest.fixture
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_command_that_runs_a_model_offers_threads(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--threads" in result.stdout, result.stdout


@pytest.mark.parametrize("torch_default, cores, load, expected", [
    (8, 8, 0.0, 8),     # an idle machine: torch's own choice
    (8, 8, 0.4, 8),     # background noise does not cost a core
    (8, 8, 5.0, 3),     # five cores busy elsewhere: the three left
    (2, 2, 6.0, 1),     # a machine busier than its cores: one thread
    (4, 16, 0.0, 4),    # never more than torch's default
])
def test_the_default_is_torchs_lowered_to_the_idle_cores_and_at_least_one(torch_default, cores, load, expected):
    assert default_threads(torch_default, cores, load) == expected


def test_threads_flag_wins_and_omp_num_threads_is_kept_without_it():
    assert chosen_threads(3, 8, environ={"OMP_NUM_THREADS": "6"}) == 3
    assert chosen_threads(None, 6, environ={"OMP_NUM_THREADS": "6"}) is None
    assert chosen_threads(None, 6, environ={"MKL_NUM_THREADS": "2"}) is None
    chosen = chosen_threads(None, 6, environ={})
    assert 1 <= chosen <= 6


def test_a_cgroup_quota_is_read_in_whole_cores(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    for text, cores in [("250000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None), ("junk\n", None)]:
        cpu_max.write_text(text)
        assert cgroup_cpu_quota(str(cpu_max)) == cores, text
    assert cgroup_cpu_quota(str(tmp_path / "missing")) is None


def test_generate_threads_sets_torchs_threads(keep_torch_threads):
    torch.set_num_threads(1)
    result = runner.invoke(app, ["generate", "ROMEO:", "-n", "2", "--seed", "0", "--device", "cpu",
                                 "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 2


def test_threads_zero_is_a_usage_error():
    result = runner.invoke(app, ["generate", "ROMEO:", "--threads", "0"])
    assert result.exit_code == 2 and "--threads" in result.output, result.output
