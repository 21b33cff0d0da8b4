"""`samplekit run`'s request file: formats, defaults, precedence, and one clear error per bad line.

No model runs here: these read and validate request files (``samplekit.jobs.inputs``), and check
that the CLI refuses a bad file before anything else (one `error:` line, exit 2).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.errors import ConfigError
from samplekit.jobs.inputs import Defaults, read_jobs

runner = CliRunner()


def write(tmp_path, name: str, lines: list) -> str:
    path = tmp_path / name
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return str(path)


def test_defaults_ids_seeds_and_blank_lines(tmp_path):
    path = write(tmp_path, "p.jsonl", [{"prompt": "a"}, "", {"prompt": "b", "id": "x"}, {"prompt": "c", "seed": 7}])
    jobs = read_jobs(path, Defaults(seed=100)).jobs
    assert [(j.line, j.id, j.seed) for j in jobs] == [(1, 1, 100), (3, "x", 102), (4, 4, 7)]
    assert jobs[0].chain == {"chain": [{"temperature": {"value": 0.8}}, {"top_k": {"k": 50, "min_tokens_to_keep": 1}},
                                       {"multinomial": {}}]}
    assert (jobs[0].n, jobs[0].max_new_tokens, jobs[0].stop) == (1, 200, ())


def test_precedence_command_line_then_the_line(tmp_path):
    path = write(tmp_path, "p.jsonl", [
        {"prompt": "a"},
        {"prompt": "b", "set": ["top_k.k=7", "max_new_tokens=9"], "stop": "\n"},
        {"prompt": "c", "set": {"top_k.k": 8}, "max_new_tokens": 3, "n": 2},
        {"prompt": "d", "config": {"chain": ["greedy"], "seed": 5}},
        {"prompt": "e", "config": "creative"},
    ])
    jobs = read_jobs(path, Defaults(config="balanced", sets=("top_k.k=20",), max_new_tokens=11, n=3)).jobs
    top_k = [j.chain["chain"][1]["top_k"]["k"] if len(j.chain["chain"]) > 1 else None for j in jobs]
    assert top_k == [20, 7, 8, None, 100]  # a line's config replaces --config and --set
    assert [j.max_new_tokens for j in jobs] == [11, 9, 3, 11, 11]
    assert [j.n for j in jobs] == [3, 3, 2, 3, 3]
    assert jobs[1].stop == ("\n",)
    assert jobs[3].seed == 5 and jobs[4].seed == 4  # its config's seed; else --seed (0) + index
    assert jobs[4].chain["chain"][0] == {"temperature": {"value": 1.2}}


def test_plain_text_by_extension_or_first_line(tmp_path):
    text = tmp_path / "prompts"
    text.write_text("ROMEO:\n\n{not json}\r\nJULIET:\n")
    as_text = read_jobs(str(text), Defaults())
    assert as_text.format == "text" and [(j.line, j.prompt) for j in as_text.jobs] == [
        (1, "ROMEO:"), (3, "{not json}"), (4, "JULIET:")]
    sniffed = tmp_path / "requests.data"
    sniffed.write_text('\n{"prompt": "x"}\n')
    assert read_jobs(str(sniffed), Defaults()).format == "jsonl"
    txt = tmp_path / "p.txt"
    txt.write_text('{"prompt": "x"}\n')
    assert read_jobs(str(txt), Defaults()).jobs[0].prompt == '{"prompt": "x"}'


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a",', "line 2: invalid JSON at column 16"),
    ('{"id": 3}', "line 2: missing field 'prompt'"),
    ('{"prompt": 5}', "line 2: prompt: 5 is not allowed; expected a string"),
    ('{"prompt": "a", "config": "nosuch"}', "line 2: config: nosuch: no such config file or preset (presets: "),
    ('{"prompt": "a", "config": {"chain": ["top_k", "greedy"], "max_new_tokens": 0}}',
     "line 2: config: max_new_tokens: 0 is out of range; expected integer in [1, 1000000]"),
    ('{"prompt": "a", "max_new_tokens": 0}', "line 2: max_new_tokens: 0 is out of range; expected integer in "
                                             "[1, 1000000]"),
    ('{"prompt": "a", "set": ["top_k.k=-1"]}', "line 2: set: chain[1].top_k.k: -1 is out of range; expected "
                                               "integer in [1, inf)"),
    ('{"prompt": "a", "set": ["oops"]}', "line 2: set[0]: 'oops': expected PROCESSOR.PARAM=VALUE"),
    ('{"prompt": "a", "n": 0}', "line 2: n: 0 is out of range; expected integer in [1, 1024]"),
    ('{"prompt": "a", "seed": -1}', "line 2: seed: -1 is out of range"),
    ('{"prompt": "a", "stop": [""]}', "line 2: stop: [''] is not allowed"),
    ('{"prompt": "a", "promt": 1}', "line 2: unknown field 'promt'; allowed: prompt, id, seed"),
    ('{"prompt": "a", "id": 1.5}', "line 2: id: 1.5 is not allowed; expected an integer or a string"),
    ('["a"]', 'line 2: expected a JSON object such as {"prompt": "..."}'),
    ('{"prompt": "a", "prompt": "b"}', "line 2: invalid JSON: duplicate key 'prompt'"),
    ('{"prompt": "a", "id": 1}', "line 2: id: 1 is also the id of line 1; ids must be unique"),
])
def test_each_bad_line_is_one_error_naming_file_line_and_field(tmp_path, line, message):
    path = write(tmp_path, "p.jsonl", [{"prompt": "first"}, line])
    got = read_jobs(path, Defaults())
    assert len(got.jobs) == 1 and len(got.bad) == 1
    assert got.bad[0].line == 2
    assert got.bad[0].error.startswith(f"{path}: {message}"), got.bad[0].error


def test_the_cli_refuses_a_bad_file_before_anything_runs(tmp_path):
    path = write(tmp_path, "p.jsonl", [{"prompt": "a"}, {"prompt": "b", "id": 1}, '{"prompt"', {"x": 1}])
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["run", path, "-o", str(out), "--checkpoint", str(tmp_path / "missing.pt")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {path}: line 2: id: 1 is also the id of line 1; ids must be unique (2 more invalid "
                     "lines; --skip-invalid writes them as error records and runs the rest)"]
    assert not out.exists()  # nothing written, the (missing) model never loaded


def test_command_line_errors_are_one_line(tmp_path):
    path = write(tmp_path, "p.jsonl", [{"prompt": "a"}])
    result = runner.invoke(app, ["run", path, "-o", str(tmp_path / "o.jsonl"), "--set", "top_k.k=0"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --set <default>: chain[1].top_k.k: 0 is out of range")
    result = runner.invoke(app, ["run", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and result.stderr == f"error: {tmp_path / 'nope.jsonl'}: no such request file\n"
    result = runner.invoke(app, ["run", path, "-o", str(tmp_path / "o.jsonl"), "--workers", "2"])
    assert result.exit_code == 2 and result.stderr == "error: --workers is for --engine ray\n"


def test_seed_plus_index_must_stay_in_range(tmp_path):
    path = write(tmp_path, "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    got = read_jobs(path, Defaults(seed=2**63 - 1))
    assert [j.line for j in got.jobs] == [1]
    assert ("line 2: seed: the run's seed 9223372036854775807 plus the line's index 1 passes 2**63 - 1"
            in got.bad[0].error)


def test_not_utf8_and_not_a_file(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_bytes(b'{"prompt": "a"}\n{"prompt": "\xff"}\n')
    with pytest.raises(ConfigError, match=r"p.jsonl: the request file is not valid UTF-8 \(line 2"):
        read_jobs(str(bad), Defaults())
    with pytest.raises(ConfigError, match="the request file is a directory"):
        read_jobs(str(tmp_path), Defaults())
