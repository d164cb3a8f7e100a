"""VLM evaluation of a grid: the selections scored by the oracle equal the grid's own oracle accuracy; the
Qwen2.5-VL scorer builds the original's prompt and runs end to end with a tiny random model; bad input gets
one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from leverjax.data import save_npz, synth
from leverjax.errors import ConfigError, DataError
from leverjax.run import launch
from leverjax.tools import vlm_eval

# the launcher tests' tiny grid (tests/run/test_launch.py, grid_a): the same programs, compiled once per session
TINY = dict(hidden=16, sft_epochs=2, rce_epochs=2, grpo_epochs=2, sft_batch_size=16, rce_batch_size=8,
            grpo_batch_size=8, eval_chunk=64, eval_shots=3)
SYNTH = dict(seed=0, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6, dim=16)
SHOTS = (1, 2, 3)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm_grid")
    data = synth.make_synthetic(**SYNTH)
    path = str(root / "data.npz")
    save_npz(data, path)
    out = str(root / "grid")
    launch.run_grid(["rce_only", "scheme5", "scheme5_6"], TINY, seeds=1, out=out, dataset=data,
                    experiment_overrides={"rce_only": {"grpo_epochs": 0}}, printer=lambda _: None, workers=1)
    return {"results": out, "data": path, "dataset": data, "root": root}


def options(grid, **kw):
    base = dict(results=grid["results"], out=str(grid["root"] / "out"), data=grid["data"], shots=SHOTS,
                progress=False, resamples=200)
    return vlm_eval.Options(**{**base, **kw})


def test_oracle_scores_equal_the_grids_own_oracle_accuracy(grid, tmp_path):
    out = str(tmp_path / "oracle")
    res = subprocess.run([sys.executable, "-m", "leverjax.vlm_eval", f"--results={grid['results']}",
                          f"--data={grid['data']}", "--scorer=oracle", f"--out={out}", "--shots=1,2,3",
                          "--resamples=200"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.load(open(os.path.join(out, "summary.json")))
    own = {r["run"]: r for r in json.load(open(os.path.join(grid["results"], "summary.json")))["final"]}
    runs = [r for r in summary["runs"] if not r["reference"]]
    assert sorted(r["name"] for r in runs) == sorted(own)
    for r in runs:
        for n in SHOTS:
            assert r["acc"][str(n)] == pytest.approx(own[r["name"]][f"test_oracle_acc_{n}"], abs=1e-6)
    assert summary["oracle_consistency"]["max_abs_diff"] < 1e-6
    # the references, the paired differences and the cache are there; seeds and shots of one variant agree
    assert {r["variant"] for r in summary["runs"] if r["reference"]} == {"random_all", "similarity"}
    assert summary["baseline"] == "rce_only" and set(summary["paired"]) == {"scheme5", "scheme5_6", "random_all",
                                                                           "similarity"}
    row = summary["paired"]["scheme5_6"]["1"]
    assert row["low"] <= row["delta"] <= row["high"] and "mcnemar" in row and row["mde"] >= 0
    assert summary["cache"]["calls"] == summary["cache"]["unique_prompts"] <= summary["cache"]["requests"]
    assert "Paired differences to `rce_only`" in open(os.path.join(out, "report.md")).read()
    assert res.stdout.splitlines()[0].startswith("scored 5 selections")


def test_best_parameters_match_the_grids_best_test_metrics_and_subsets_are_shared(grid):
    summary = vlm_eval.evaluate(options(grid, params="best", questions=7, references=()))
    assert summary["questions"] == 7 and summary["oracle_consistency"]["note"].startswith("a subset")
    full = vlm_eval.evaluate(options(grid, params="best", references=()))
    own = {r["run"]: r for r in json.load(open(os.path.join(grid["results"], "summary.json")))["final"]}
    for r in full["runs"]:
        assert r["acc"]["2"] == pytest.approx(own[r["name"]]["best_test_oracle_acc_2"], abs=1e-6)
    rows = [line.split(",") for line in open(os.path.join(grid["root"], "out", "questions.csv")).read().splitlines()]
    assert rows[0][:5] == ["run", "variant", "seed", "shots", "query"] and len(rows) == 1 + 3 * len(SHOTS) * \
        full["questions"]


def test_random_reference_draws_distinct_rows_of_the_whole_set_but_the_query(grid):
    data = grid["dataset"]
    questions = np.arange(20)
    refs = vlm_eval.reference_selections(data, questions, (1, 4), seeds=(0, 1), names=("random_all",))
    qrows = np.asarray(data.query_ids)[questions]
    for ref in refs:
        picks = ref.picks[4]
        assert picks.shape == (20, 4) and picks.min() >= 0 and picks.max() < data.emb.shape[0]
        assert all(len(set(p)) == 4 and q not in p for p, q in zip(picks.tolist(), qrows.tolist()))
    assert not np.array_equal(refs[0].picks[4], refs[1].picks[4])  # each seed draws afresh
    outside = refs[0].picks[4][~np.isin(refs[0].picks[4], np.asarray(data.query_ids))]
    assert outside.size > 0  # drawn from every example, not only the queries


def test_bad_results_and_options_get_one_line(grid, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "grid.json").write_text(json.dumps({"runs": []}))
    with pytest.raises(DataError, match="has no finished runs"):
        vlm_eval.evaluate(options(grid, results=str(empty)))
    with pytest.raises(DataError, match="not a leverjax results directory"):
        vlm_eval.evaluate(options(grid, results=str(tmp_path)))
    with pytest.raises(ConfigError, match="--questions=100000 exceeds"):
        vlm_eval.evaluate(options(grid, questions=100000))
    with pytest.raises(ConfigError, match="--scorer=qwen needs --model"):
        vlm_eval.evaluate(options(grid, scorer="qwen"))
    # Checked before any selection is decoded: a wrong path is one line at once.
    with pytest.raises(ConfigError, match="--model=.*nowhere: no such directory"):
        vlm_eval.evaluate(options(grid, scorer="qwen", model=str(tmp_path / "nowhere"), examples=grid["data"]))
    with pytest.raises(ConfigError, match="--examples=.*nowhere.json: no such file"):
        vlm_eval.evaluate(options(grid, scorer="qwen", model=str(tmp_path), examples=str(tmp_path / "nowhere.json")))
    with pytest.raises(ConfigError, match="--baseline=nope is not a variant"):
        vlm_eval.evaluate(options(grid, baseline="nope", questions=3))
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    (recorded / "grid.json").write_text(json.dumps({"provenance": {"data": [{"path": grid["data"], "sha256": "0" * 64}]}}))
    with pytest.raises(DataError, match="is not the data .* trained on"):
        vlm_eval.data_path(str(recorded), None)
    with pytest.raises(DataError, match="nowhere.npz does not exist"):
        vlm_eval.data_path(str(recorded), str(tmp_path / "nowhere.npz"))


# -- the Qwen2.5-VL scorer ----------------------------------------------------------------------------------------

# The original's system prompt (configs/infer_model/qwen2.5_vl_3B.yaml), written out here on its own.
ORIGINAL_SYSTEM_PROMPT = (
    "In the upcoming task, you will see four sets of dialogues, each containing two roles: user and assistant. "
    "The user is the questioner, who provides an image and asks a question based on it; the assistant is the "
    "responder, who answers according to the image and question provided by the user. Afterward, you will "
    "receive an image and a question from the user. Please act as the assistant and answer based on the four "
    "previous dialogue sets and your own knowledge. Strictly follow the answering format: if the examples use "
    "only one or two keywords, your reply must also use only one or two keywords; if the examples contain no "
    "more than three tokens, your reply must not exceed three tokens either."
)


def original_prompt(tokenizer, template, demos, query, images):
    """Transcription of the original's ``Qwen2VLInterface.transfer_prompts`` + ``prepare_input``: a flat list
    [image, text, image, text, ..., query image, query text] (openicl's template; the query's answer blank),
    one content item each (texts stripped of spaces, empty ones skipped), one system and one user message,
    the chat template with the generation prompt."""
    flat = []
    for example, image in zip([*demos, query], images):
        flat.append(image)
        answer = "" if example is query else example.answer
        flat.append("Question:<Q> Short answer:<A>".replace("<Q>", example.question).replace("<A>", answer))
    content = []
    for item in flat:
        if isinstance(item, str):
            if item.strip(" "):
                content.append({"type": "text", "text": item.strip(" ")})
        else:
            content.append({"type": "image", "image": item})
    messages = [{"role": "system", "content": ORIGINAL_SYSTEM_PROMPT}, {"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         chat_template=template)


@pytest.fixture(scope="module")
def qwen(grid):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("PIL")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fixtures_qwen

    from leverjax.tools import examples as examples_lib
    from leverjax.tools.qwen_scorer import QwenScorer

    root = grid["root"]
    model = fixtures_qwen.save_tiny_qwen(str(root / "model"))
    examples = fixtures_qwen.write_examples(str(root / "ex"), SYNTH["num_examples"], images=5, answers=True)
    loaded = examples_lib.load_examples(examples, answers=True)
    return {"model": model, "examples": examples, "loaded": loaded, "scorer": QwenScorer(model, loaded),
            "fixtures": fixtures_qwen}


def test_prompt_is_the_originals(qwen):
    from leverjax.tools import qwen_scorer

    scorer, ex = qwen["scorer"], qwen["loaded"]
    assert scorer.template_checked  # the tiny model ships Qwen2.5-VL's template and it renders the same
    demos, query = [ex[3], ex[1]], ex[2]
    ours = qwen_scorer.render_prompt(demos, query)
    theirs = original_prompt(scorer.tokenizer, qwen["fixtures"].CHAT_TEMPLATE, demos, query, [object()] * 3)
    assert ours == theirs
    assert ours.count("<|vision_start|><|image_pad|><|vision_end|>") == 3
    assert f"Question:{ex[3].question} Short answer:{ex[3].answer}<|vision_start|>" in ours
    assert ours.endswith(f"Question:{query.question} Short answer:<|im_end|>\n<|im_start|>assistant\n")
    assert ex[0].answer == "red"  # the most common of the ten answers (6 × red, 4 × two)
    texts, images = scorer.prompts(np.array([2]), np.array([[3, 1]]))
    assert texts == [ours] and len(images) == 3  # demonstrations' images first, in order, then the query's


def test_image_resize_is_qwen_vl_utils():
    from leverjax.tools.qwen_scorer import smart_resize

    assert smart_resize(480, 640) == (476, 644)
    assert smart_resize(10, 10) == (56, 56)
    h, w = smart_resize(8000, 6000)
    assert h % 28 == w % 28 == 0 and h * w <= 16384 * 28 * 28
    with pytest.raises(DataError, match="aspect ratio"):
        smart_resize(1, 500)


def test_tiny_qwen_runs_end_to_end_and_the_cache_makes_a_rerun_free(grid, qwen, tmp_path):
    o = options(grid, scorer="qwen", model=qwen["model"], examples=qwen["examples"], questions=3, shots=(1, 2),
                out=str(tmp_path / "qwen"), batch_size=4, device="cpu")
    first = vlm_eval.evaluate(o)
    assert first["scorer"]["num_beams"] == 3 and first["scorer"]["max_new_tokens"] == 5
    accs = [a for r in first["runs"] for a in r["acc"].values()]
    assert all(0.0 <= a <= 1.0 for a in accs) and len(first["runs"]) == 5
    assert first["cache"]["calls"] == first["cache"]["unique_prompts"] > 0
    again = vlm_eval.evaluate(o)  # resumed from OUT/prompt_cache.jsonl
    assert again["cache"]["calls"] == 0 and again["cache"]["hit_rate"] == 1.0
    assert [r["acc"] for r in again["runs"]] == [r["acc"] for r in first["runs"]]
    lines = open(os.path.join(o.out, "questions.csv")).read().splitlines()
    assert len(lines) == 1 + 5 * 2 * 3


def test_qwen_bad_examples_get_one_line(grid, qwen, tmp_path):
    from leverjax.tools import examples as examples_lib
    from leverjax.tools.qwen_scorer import QwenScorer

    records = json.load(open(qwen["examples"]))
    folder = os.path.dirname(qwen["examples"])
    path = os.path.join(folder, "short.json")
    json.dump(records[:-1], open(path, "w"))
    with pytest.raises(DataError, match="holds 299 examples but the data has 300 rows"):
        vlm_eval.evaluate(options(grid, scorer="qwen", model=qwen["model"], examples=path, questions=2))
    del records[4]["answers"]
    json.dump(records, open(path, "w"))
    with pytest.raises(DataError, match=r"record 4 \(id 1004\) has no answers"):
        examples_lib.load_examples(path, answers=True)
    records[4]["answers"] = ["x"]
    records[5]["image"] = "images/missing.png"
    json.dump(records, open(path, "w"))
    scorer = QwenScorer(qwen["model"], examples_lib.load_examples(path, answers=True))
    with pytest.raises(DataError, match=r"image of record 5 \(id 1005\) cannot be read: .*missing.png"):
        scorer.score_batch(np.array([0]), np.array([[5]]))
    with pytest.raises(DataError, match="row 300 has no example"):
        scorer.score_batch(np.array([300]), np.array([[1]]))


def test_ground_truth_probability_and_relevance(qwen):
    import torch

    from leverjax.tools.qwen_scorer import QwenScorer, relevance

    scorer = QwenScorer(qwen["model"], qwen["loaded"], gt_prob=True)
    texts, images = scorer.prompts(np.array([2]), np.array([[3, 1]]))
    answers = ["red", "what color is the dog"]
    together = scorer.answer_probabilities(texts[0], images, answers)  # padded to the longer answer
    alone = [scorer.answer_probabilities(texts[0], images, [a])[0] for a in answers]
    assert together == pytest.approx(alone, rel=1e-4)
    # by hand: the answer's tokens are the ones after the prompt's; exp of their mean log-probability
    full = scorer._inputs([texts[0] + "red"], images)
    n_prompt = full["input_ids"].shape[1] - len(scorer.tokenizer("red", add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logp = torch.log_softmax(scorer.model(**full).logits[0, :-1].float(), -1)
    ids = full["input_ids"][0, n_prompt:]
    assert alone[0] == pytest.approx(float(torch.exp(logp[n_prompt - 1:].gather(-1, ids[:, None]).mean())), rel=1e-5)
    # six "red" and four "two": min(6/3, 1)·p(red) + min(4/3, 1)·p(two)
    p_two = scorer.answer_probabilities(texts[0], images, ["two"])[0]
    assert scorer.gt_prob(texts[0], images, ["red"] * 6 + ["two"] * 4) == pytest.approx(alone[0] + p_two, rel=1e-5)
    labels = scorer.score_batch(np.array([2]), np.array([[3, 1]]))[0]
    assert labels["gt_prob"] == pytest.approx(scorer.gt_prob(texts[0], images, qwen["loaded"][2].answers), rel=1e-5)
    # token F1 2·1/(2 + 3) = 0.4; characters: "red " matches, 2·4/(7 + 9) = 0.5
    assert relevance("red car", ["a red bus"]) == pytest.approx(0.5)
    assert relevance("red car", ["the red", "zzzzzzzzzzzzzzzzzzz"]) == pytest.approx(max(2 / 4, 2 * 3 / 14))
    assert relevance("", ["red"]) == 0.0 and relevance("Red", ["red"]) == 1.0


def test_one_checkpoint_gives_the_grids_numbers_for_its_run(grid, tmp_path):
    folder = [os.path.join(grid["results"], "runs", g, "final") for g in sorted(os.listdir(
        os.path.join(grid["results"], "runs")))]
    meta_runs = [json.load(open(os.path.join(os.path.dirname(f), "results.json")))["runs"] for f in folder]
    g, j = next((i, k) for i, runs in enumerate(meta_runs) for k, r in enumerate(runs) if len(runs) > 1 and k == 1)
    name = meta_runs[g][j]["name"]
    one = vlm_eval.evaluate(options(grid, results=None, checkpoint=folder[g], run=j, out=str(tmp_path / "one"),
                                    references=("similarity",)))
    own = {r["run"]: r for r in json.load(open(os.path.join(grid["results"], "summary.json")))["final"]}
    run = next(r for r in one["runs"] if not r["reference"])
    for n in SHOTS:
        assert run["acc"][str(n)] == pytest.approx(own[name][f"test_oracle_acc_{n}"], abs=1e-6)
    assert "Selector: `" in open(tmp_path / "one" / "report.md").read()
    with pytest.raises(ConfigError, match="--checkpoint needs --data"):
        vlm_eval.evaluate(options(grid, results=None, checkpoint=folder[g], data=None))
    with pytest.raises(ConfigError, match="not both or neither"):
        vlm_eval.evaluate(options(grid, checkpoint=folder[g]))
