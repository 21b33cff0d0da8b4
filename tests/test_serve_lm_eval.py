"""``lm-eval`` (EleutherAI's harness) through ``samplekit serve``: a multiple-choice task defined
in a local YAML file over a local JSON dataset (no network), run with ``--model
local-completions`` against the server, gives the same accuracy and per-choice log-likelihoods
(within 1e-4) as ``--model hf`` on the same tiny random-weight model folder; a ``generate_until``
task runs to the end. Both runs are the real ``lm-eval`` command, offline."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serve_helpers import KEY, needs_serve

QUESTIONS = [
    ("ROMEO: But soft, what light through yonder", ["window breaks?", "door opens.", "lazy dog", "0123"], 0),
    ("JULIET: O Romeo, Romeo, wherefore art", ["thou Romeo?", "the fox", "über Café", "lines"], 0),
    ("The quick brown fox jumps over the", ["lazy dog", "old play", "little model", "window"], 0),
    ("It read the same lines again and", ["again", "Romeo", "naïve", "breaks"], 0),
    ("Once upon a time there was a little", ["model", "dog", "play", "light"], 0),
    ("Café, naïve, über: the tokenizer must keep", ["every byte.", "the lines", "the fox", "thou"], 0),
]
MC_TASK = """task: samplekit_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
"""
GEN_TASK = """task: samplekit_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{choices[0]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def lm_eval_setup(tmp_path_factory):
    needs_serve()
    for module in ("lm_eval", "transformers", "tokenizers", "datasets"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install 'samplekit-lm[serve-test]'")
    from hf_fixtures import byte_level_tokenizer, model_folder
    from samplekit.serve.local import LocalServer

    root = tmp_path_factory.mktemp("lm_eval")
    folder = model_folder(root, "llama", tokenizer=byte_level_tokenizer(), context=256)
    data = root / "questions.json"
    data.write_text(json.dumps([{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS]))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "samplekit_mc.yaml").write_text(MC_TASK.format(data=data))
    (tasks / "samplekit_gen.yaml").write_text(GEN_TASK.format(data=data))
    with LocalServer("--model", str(folder), "--max-batch", "8", api_key=KEY) as server:
        yield server, folder, tasks, root


def lm_eval(root: Path, tasks: Path, name: str, model: str, model_args: str, task: str,
            extra: list[str] = ()) -> dict:
    """Run the ``lm-eval`` command offline; its results and logged samples."""
    out = root / name
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / "datasets-cache"), "OPENAI_API_KEY": KEY, "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [str(Path(sys.executable).parent / "lm-eval"), "run", "--model", model, "--model_args", model_args,
               "--tasks", task, "--include_path", str(tasks), "--output_path", str(out), "--log_samples",
               "--batch_size", "1", *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = [json.loads(line) for f in out.rglob(f"samples_{task}_*.jsonl") for line in f.read_text().splitlines()]
    return {"results": results["results"][task], "samples": sorted(samples, key=lambda s: s["doc_id"])}


def test_lm_eval_multiple_choice_through_the_server_matches_the_hf_model(lm_eval_setup):
    server, folder, tasks, root = lm_eval_setup
    hf = lm_eval(root, tasks, "hf", "hf", f"pretrained={folder},dtype=float32", "samplekit_mc",
                 extra=["--device", "cpu"])
    api_args = (f"model={folder.name},base_url={server.url}/v1/completions,tokenizer_backend=huggingface,"
                f"tokenizer={folder},tokenized_requests=True,num_concurrent=1,max_retries=1")
    api = lm_eval(root, tasks, "api", "local-completions", api_args, "samplekit_mc")
    assert api["results"]["acc,none"] == hf["results"]["acc,none"]
    assert len(api["samples"]) == len(hf["samples"]) == len(QUESTIONS)
    for ours, theirs in zip(api["samples"], hf["samples"]):
        mine = [float(r[0]) for r in ours["filtered_resps"]]
        reference = [float(r[0]) for r in theirs["filtered_resps"]]
        assert mine == pytest.approx(reference, abs=1e-4)
        assert all(m < 0 for m in mine)


def test_lm_eval_generate_until_runs_to_the_end(lm_eval_setup):
    server, folder, tasks, root = lm_eval_setup
    api_args = (f"model={folder.name},base_url={server.url}/v1/completions,tokenizer_backend=huggingface,"
                f"tokenizer={folder},tokenized_requests=False,num_concurrent=1,max_retries=1")
    gen = lm_eval(root, tasks, "gen", "local-completions", api_args, "samplekit_gen")
    assert len(gen["samples"]) == len(QUESTIONS)
    assert "exact_match,none" in gen["results"]
    assert all(isinstance(s["filtered_resps"][0], str) for s in gen["samples"])
