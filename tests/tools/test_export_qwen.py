"""Tests of the Qwen2.5-VL embedding exporter, with a tiny random model built offline.

Tests that run a model need torch and transformers (``pip install -r requirements-export.txt``) and
are skipped without them; the input checks run everywhere. No test downloads anything.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from leverjax.errors import ConfigError, DataError, LeverjaxError
from leverjax.tools import examples as examples_lib
from leverjax.tools import export_qwen as eq
from leverjax.tools import shards

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N_EXAMPLES = 6


# ----------------------------------------------------------------------------------------------
# Helpers and fixtures
# ----------------------------------------------------------------------------------------------


def write_json(path, obj) -> str:
    """Writes ``obj`` as JSON and returns the path as a string."""
    with open(path, "w") as f:
        json.dump(obj, f)
    return str(path)


def records(n: int = 3) -> list[dict]:
    """OKVQA-style records whose images do not need to exist (for input checks)."""
    return [{"question_id": 10 + i, "image_id": 7, "image": f"img_{i}.png", "question": f"what {i} ?"}
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Qwen2.5-VL on disk, six generated examples, and the model loaded once."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("PIL")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fixtures_qwen

    root = tmp_path_factory.mktemp("qwen")
    model_dir = fixtures_qwen.save_tiny_qwen(str(root / "model"))
    examples = fixtures_qwen.write_examples(str(root / "data"), N_EXAMPLES)
    encoder = eq.QwenEncoder(eq.EncoderOptions(model=model_dir))
    return {"model": model_dir, "examples": examples, "data": str(root / "data"), "encoder": encoder}


def run_export(tiny, out, encoder=None, **kwargs) -> eq.ExportResult:
    """Exports the fixture's examples (or ``kwargs['examples']``) with small shards, no progress bar."""
    options = dict(examples=tiny["examples"], out=str(out), batch_size=2, shard_size=4, progress=False,
                   num_workers=1)
    options.update(kwargs)
    after_shard = options.pop("after_shard", None)
    enc = encoder or tiny["encoder"]
    return eq.export(eq.ExportOptions(**options), lambda: enc, after_shard=after_shard)


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """The table and sidecar of one uninterrupted export with the default settings."""
    out = tmp_path_factory.mktemp("reference") / "emb"
    run_export(tiny, out)
    return eq.read_export(str(out))


class CountingEncoder:
    """Wraps an encoder and counts the examples it embeds."""

    def __init__(self, inner):
        self.inner = inner
        self.embedded = 0

    def prepare_images(self, images):
        return self.inner.prepare_images(images)

    def embed(self, prepared, questions):
        self.embedded += len(questions)
        return self.inner.embed(prepared, questions)

    def describe(self):
        return self.inner.describe()

    def fingerprint(self):
        return self.inner.fingerprint()


def file_version(path: str) -> tuple[int, int]:
    """(inode, mtime): changes whenever the file is rewritten (atomic writes make a new inode)."""
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


class Interrupted(Exception):
    """Stands for a killed export."""


# ----------------------------------------------------------------------------------------------
# Without torch: imports, input checks, paths
# ----------------------------------------------------------------------------------------------


def test_importing_leverjax_does_not_import_torch():
    code = ("import sys, leverjax, leverjax.tools.export_qwen; "
            "assert not {'torch', 'transformers'} & set(sys.modules), 'heavy import'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_missing_dependencies_name_the_requirements_file(monkeypatch):
    def no_such_module(name):
        raise ImportError(name)

    monkeypatch.setattr(eq.importlib, "import_module", no_such_module)
    message = "the exporter needs torch, transformers, pillow: pip install -r requirements-export.txt"
    with pytest.raises(LeverjaxError, match=message):
        eq.import_export_deps()


def test_json_jsonl_and_vqa_files_read_alike(tmp_path):
    recs = records()
    as_json = examples_lib.load_examples(write_json(tmp_path / "a.json", recs))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    as_jsonl = examples_lib.load_examples(str(tmp_path / "b.jsonl"))
    assert as_json == as_jsonl
    assert [e.id for e in as_json] == [10, 11, 12]  # question_id wins over image_id
    assert [e.index for e in as_json] == [0, 1, 2]
    assert as_json[1].image == str(tmp_path / "img_1.png")  # relative to the examples file

    vqa = {"questions": [{k: v for k, v in r.items() if k != "image"} for r in recs]}
    fmt = examples_lib.RecordFormat(image_template="train2014/COCO_{image_id:012d}.jpg", image_root="/data/coco")
    from_vqa = examples_lib.load_examples(write_json(tmp_path / "q.json", vqa), fmt)
    assert from_vqa[0].image == "/data/coco/train2014/COCO_000000000007.jpg"
    assert [e.id for e in from_vqa] == [10, 11, 12]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r[1].pop("question"), r"record 1 \(id 11\) has no question"),
        (lambda r: r[2].update(question="  "), r"record 2 \(id 12\) has no question"),
        (lambda r: r[1].pop("image"), r"record 1 \(id 11\) has no image path"),
        (lambda r: r[2].update(question_id=10), r"records 0 and 2 have the same id 10"),
        (lambda r: r[1].update(question_id=None), r"record 1 has id None"),
        (lambda r: r[2].pop("question_id"), r"record 2 has no id field 'question_id'"),
        (lambda r: r.append(["not", "a", "record"]), r"record 3 .* is a JSON list"),
        (lambda r: r.clear(), r"holds no records"),
        (lambda r: [(x.pop("question_id"), x.pop("image_id")) for x in r], r"none of the id fields"),
    ],
)
def test_bad_records_fail_naming_the_record(tmp_path, change, message):
    recs = records()
    change(recs)
    with pytest.raises(DataError, match=message):
        examples_lib.load_examples(write_json(tmp_path / "ex.json", recs))


def test_missing_or_unparsable_examples_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        examples_lib.load_examples(str(tmp_path / "nope.json"))
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{"id": \n')
    with pytest.raises(DataError, match="line 2"):
        examples_lib.load_examples(str(tmp_path / "bad.jsonl"))


def test_output_paths_with_or_without_npy():
    for out in ("x/emb", "x/emb.npy"):
        paths = shards.output_paths(out)
        assert (paths.table, paths.ids, paths.shards) == ("x/emb.npy", "x/emb.ids.json", "x/emb.shards")
    assert shards.output_paths("x/emb").shard(12, "npy") == os.path.join("x/emb.shards", "shard_00012.npy")


def test_bad_options_and_model_dirs(tmp_path):
    examples = write_json(tmp_path / "ex.json", records())
    never = lambda: pytest.fail("the model must not load")  # noqa: E731
    with pytest.raises(ConfigError, match="on_bad_image"):
        eq.export(eq.ExportOptions(examples=examples, out=str(tmp_path / "o"), on_bad_image="maybe"), never)
    with pytest.raises(ConfigError, match="batch_size"):
        eq.export(eq.ExportOptions(examples=examples, out=str(tmp_path / "o"), batch_size=0), never)
    with pytest.raises(ConfigError, match="not a local model directory"):
        eq.read_model_config(str(tmp_path / "no-model"))
    write_json(tmp_path / "config.json", {"model_type": "llama"})
    with pytest.raises(ConfigError, match="'llama' model"):
        eq.read_model_config(str(tmp_path))
    with pytest.raises(ConfigError, match="exactly once"):
        eq.check_prompt_template("{question} only")


def test_model_identity_finds_name_and_revision(tmp_path):
    commit = "a" * 40
    snapshot = tmp_path / "models--Qwen--Qwen2.5-VL-3B-Instruct" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    write_json(snapshot / "config.json", {"model_type": "qwen2_5_vl"})
    ident = eq.model_identity(str(snapshot), {"model_type": "qwen2_5_vl"})
    assert (ident["encoder"], ident["revision"]) == ("Qwen/Qwen2.5-VL-3B-Instruct", commit)

    local = tmp_path / "qwen3b"
    (local / ".cache" / "huggingface" / "download").mkdir(parents=True)
    write_json(local / "config.json", {"model_type": "qwen2_5_vl"})
    (local / ".cache" / "huggingface" / "download" / "config.json.metadata").write_text(f"{commit}\netag\n1.0\n")
    ident = eq.model_identity(str(local), {"_name_or_path": "Qwen/Qwen2.5-VL-3B-Instruct"})
    assert (ident["encoder"], ident["revision"]) == ("Qwen/Qwen2.5-VL-3B-Instruct", commit)


def test_pooling_ignores_padding():
    torch = pytest.importorskip("torch")
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])  # right and left padding
    image = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 1]]).bool()
    mean = eq.pool_hidden_states(hidden, mask, image, "mean")
    last = eq.pool_hidden_states(hidden, mask, image, "last")
    image_mean = eq.pool_hidden_states(hidden, mask, image, "image_mean")
    np.testing.assert_allclose(mean.numpy(), [hidden[0, :3].mean(0).numpy(), hidden[1, 1:].mean(0).numpy()])
    np.testing.assert_allclose(last.numpy(), [hidden[0, 2].numpy(), hidden[1, 3].numpy()])
    np.testing.assert_allclose(image_mean.numpy(), [hidden[0, 1].numpy(), hidden[1, 2:].mean(0).numpy()])


def test_zero_or_nan_rows_are_errors():
    examples = [examples_lib.Example(0, "a", "x.png", "q"), examples_lib.Example(1, "b", "y.png", "q")]
    with pytest.raises(LeverjaxError, match=r"record 1 \(id 'b'\)"):
        eq.normalize_rows(np.array([[1.0, 0.0], [0.0, 0.0]]), examples)
    with pytest.raises(LeverjaxError, match=r"record 0 \(id 'a'\)"):
        eq.normalize_rows(np.array([[np.nan, 0.0], [1.0, 0.0]]), examples)


# ----------------------------------------------------------------------------------------------
# With the tiny model
# ----------------------------------------------------------------------------------------------


def test_export_writes_normalised_float32_rows_and_meta(tiny, reference):
    table, sidecar = reference
    assert table.shape == (N_EXAMPLES, 32) and table.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, atol=1e-5)
    assert sidecar["ids"] == [1000 + i for i in range(N_EXAMPLES)]
    assert sidecar["example_index"] == list(range(N_EXAMPLES))
    meta = sidecar["meta"]
    assert meta["rows_are_example_indices"] and meta["skipped"] == []
    assert meta["encoder"] == "model" and meta["model_path"] == os.path.realpath(tiny["model"])
    assert meta["pooling"] == "mean" and meta["dtype"] == "float32" and meta["dim"] == 32
    assert "revision" in meta and meta["model_transformers_version"]
    assert meta["leverjax_version"] and meta["created_at"]


def test_export_is_deterministic_and_rows_differ(tiny, reference, tmp_path):
    table, _ = reference
    run_export(tiny, tmp_path / "again")
    again, _ = eq.read_export(str(tmp_path / "again"))
    np.testing.assert_array_equal(table, again)
    run_export(tiny, tmp_path / "one_by_one", batch_size=1)  # padding must not change a row
    one_by_one, _ = eq.read_export(str(tmp_path / "one_by_one"))
    np.testing.assert_allclose(table, one_by_one, atol=1e-5)
    distances = np.linalg.norm(table[:, None] - table[None], axis=-1)
    assert distances[~np.eye(N_EXAMPLES, dtype=bool)].min() > 1e-3
    assert not os.path.exists(str(tmp_path / "again.shards"))


def test_same_image_other_question_gives_another_row(tiny, tmp_path):
    recs = json.load(open(tiny["examples"]))
    recs[1]["image"] = recs[0]["image"]
    examples = write_json(os.path.join(tiny["data"], "same_image.json"), recs)
    run_export(tiny, tmp_path / "emb", examples=examples)
    table, _ = eq.read_export(str(tmp_path / "emb"))
    assert np.linalg.norm(table[0] - table[1]) > 1e-3


@pytest.mark.parametrize("pooling", ["last", "image_mean"])
def test_other_poolings(tiny, reference, tmp_path, pooling):
    encoder = eq.QwenEncoder(eq.EncoderOptions(model=tiny["model"], pooling=pooling))
    run_export(tiny, tmp_path / "emb", encoder=encoder)
    table, sidecar = eq.read_export(str(tmp_path / "emb"))
    assert table.shape == (N_EXAMPLES, 32) and sidecar["meta"]["pooling"] == pooling
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, atol=1e-5)
    assert np.abs(table - reference[0]).max() > 1e-3


def test_killed_export_resumes_without_recomputing(tiny, reference, tmp_path):
    out = tmp_path / "emb"
    paths = shards.output_paths(str(out))

    def die_after_first_shard(k):
        raise Interrupted(k)

    with pytest.raises(Interrupted):
        run_export(tiny, out, shard_size=2, after_shard=die_after_first_shard)
    assert not os.path.exists(paths.table)
    first = file_version(paths.shard(0, "npy"))
    with open(paths.shard(1, "npy"), "wb") as f:  # a shard killed half-way: rows but no json
        f.write(b"partial")
    open(paths.shard(2, "npy") + ".tmp123", "wb").close()

    counting = CountingEncoder(tiny["encoder"])
    result = run_export(tiny, out, encoder=counting, shard_size=2, keep_shards=True)
    assert counting.embedded == N_EXAMPLES - 2
    assert (result.reused_shards, result.computed_shards) == (1, 2)
    assert file_version(paths.shard(0, "npy")) == first  # not rewritten
    table, sidecar = eq.read_export(str(out))
    np.testing.assert_allclose(table, reference[0], atol=1e-6)
    assert sidecar["ids"] == reference[1]["ids"]


def test_resume_refuses_other_settings_and_existing_output(tiny, tmp_path):
    out = tmp_path / "emb"

    def die(k):
        raise Interrupted(k)

    with pytest.raises(Interrupted):
        run_export(tiny, out, shard_size=2, after_shard=die)
    other = CountingEncoder(tiny["encoder"])
    other.fingerprint = lambda: {**tiny["encoder"].fingerprint(), "pooling": "last"}
    with pytest.raises(ConfigError, match="pooling: 'mean' -> 'last'"):
        run_export(tiny, out, encoder=other, shard_size=2)
    run_export(tiny, out, shard_size=2)
    with pytest.raises(ConfigError, match="--overwrite"):
        eq.export(eq.ExportOptions(examples=tiny["examples"], out=str(out)), lambda: pytest.fail("loaded"))
    run_export(tiny, out, shard_size=2, overwrite=True)


def examples_with_bad_images(tiny, tmp_path) -> str:
    """The fixture's examples with record 1 pointing at a corrupt file and record 4 at a missing one."""
    recs = json.load(open(tiny["examples"]))
    (tmp_path / "corrupt.png").write_bytes(b"this is not a png")
    recs[1]["image"] = str(tmp_path / "corrupt.png")
    recs[4]["image"] = str(tmp_path / "missing.png")
    for r in recs:
        r["image"] = os.path.join(tiny["data"], r["image"])
    return write_json(tmp_path / "bad.json", recs)


def test_bad_images_stop_the_run(tiny, tmp_path):
    examples = examples_with_bad_images(tiny, tmp_path)
    never = lambda: pytest.fail("the model must not load")  # noqa: E731
    options = eq.ExportOptions(examples=examples, out=str(tmp_path / "emb"), progress=False)
    with pytest.raises(DataError, match=r"record 4 \(id 1004\) cannot be read: .*missing.png \(file not found\)"):
        eq.export(options, never)
    (tmp_path / "missing.png").write_bytes(open(os.path.join(tiny["data"], "images", "img_004.png"), "rb").read())
    with pytest.raises(DataError, match=r"record 1 \(id 1001\) cannot be read: .*corrupt.png"):
        run_export(tiny, tmp_path / "emb", examples=examples)
    assert not os.path.exists(str(tmp_path / "emb.npy"))


def test_bad_images_skipped_are_recorded_never_zero(tiny, reference, tmp_path, capsys):
    examples = examples_with_bad_images(tiny, tmp_path)
    # one example per shard: the shards of skipped examples hold no rows
    result = run_export(tiny, tmp_path / "emb", examples=examples, on_bad_image="skip", shard_size=1)
    table, sidecar = eq.read_export(str(tmp_path / "emb"))
    kept = [0, 2, 3, 5]
    assert table.shape == (4, 32) and result.n_rows == 4
    assert sidecar["example_index"] == kept and sidecar["ids"] == [1000 + i for i in kept]
    np.testing.assert_allclose(table, reference[0][kept], atol=1e-5)
    meta = sidecar["meta"]
    assert not meta["rows_are_example_indices"]
    assert [(s["index"], s["id"]) for s in meta["skipped"]] == [(1, 1001), (4, 1004)]
    assert "file not found" in meta["skipped"][1]["error"]
    assert "1001" in capsys.readouterr().err
    assert "skipped 2 example(s)" in eq.summary(result)


def test_command_line(tiny, reference, tmp_path):
    out = tmp_path / "cli" / "emb.npy"
    cmd = [sys.executable, "-m", "leverjax.tools.export_qwen", f"--model={tiny['model']}",
           f"--examples={tiny['examples']}", f"--out={out}", "--batch_size=3", "--noprogress"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote 6 x 32 float32 embeddings" in done.stdout
    table, sidecar = eq.read_export(str(out))
    np.testing.assert_allclose(table, reference[0], atol=1e-5)

    bad = cmd[:4] + [f"--examples={tmp_path / 'missing.json'}"] + cmd[5:]
    failed = subprocess.run(bad, cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [f"error: examples file {tmp_path / 'missing.json'} does not exist"]
