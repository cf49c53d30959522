"""STS-B-DIR data pipeline and BiLSTM model.

Tests marked ``needs_real`` read the published split files (found by ``conftest.real_split_dir``:
``data/sts-b-dir`` or ``$RANKSIM_TEST_DATA/sts-b-dir``) and are skipped without them; everything
else runs on small files written here in the same formats. Nothing touches the internet: downloads go to a local ``http.server`` or through a
replaced download function.
"""

from __future__ import annotations

import csv
import functools
import logging
import re
import http.server
import shutil
import threading
import zipfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import torch

from ranksim.data.sts_b import published
from ranksim.data.sts_b.dataset import collate_sts_b, load_sts_b
from ranksim.data.sts_b import text as sts_text
from ranksim.data.sts_b.glove import (GLOVE_ZIP, build_glove_matrix, read_embedding_cache, read_glove_rows,
                                      write_embedding_cache)
from ranksim.data.sts_b.prepare import prepare_glove_main, prepare_sts_b_main
from ranksim.data.sts_b.published import DIR_SOURCE, PUBLISHED_ROWS, RANKSIM_SOURCE, download_splits
from ranksim.data.sts_b.rebuild_split import rebuild_splits
from ranksim.data.sts_b.split_files import SPLIT_FILES, read_sts_tsv
from ranksim.data.sts_b.text import PAD, UNK, build_vocab, encode, tokenise_split, tokenize
from ranksim.errors import UserError
from ranksim.methods.fds import FDS
from ranksim.methods.regularizer import batchwise_ranking_regularizer

from conftest import needs_real_split, real_split_dir, require_real_split

REAL_ROOT = real_split_dir("sts-b-dir")
HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
          "score"]

needs_real = needs_real_split("sts-b-dir")


def write_tsv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [header] + rows) + "\n", encoding="utf-8")
    return path


def row(s1: str, s2: str, score: str, i: int = 0) -> list[str]:
    return [str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", s1, s2, score]


@pytest.fixture(scope="module")
def real_data():
    return load_sts_b(require_real_split("sts-b-dir"))


# ------------------------------------------------------------------------------------------
# Real split files
# ------------------------------------------------------------------------------------------

@needs_real
def test_real_row_counts(real_data):
    assert {s: len(read_sts_tsv(REAL_ROOT / n).rows) for s, n in SPLIT_FILES.items()} == \
        {"train": 5249, "val": 1000, "test": 1000}
    for split, n in PUBLISHED_ROWS.items():
        labels = real_data.labels(split)
        assert labels.shape == (n,) and labels.dtype == np.float32
        assert labels.min() >= 0 and labels.max() <= 5
        assert len(real_data.dataset(split)) == n


@needs_real
def test_real_split_files_match_recorded_hashes():
    # The download checks against these; they must describe the files the tests use.
    for name, expected in RANKSIM_SOURCE.files.items():
        assert published.matches_published(REAL_ROOT / name, expected), name


@needs_real
def test_shot_region_counts_on_test_split(real_data):
    """SPEC 5's fixed bin lists, applied by a slow loop with exact decimal arithmetic on the score
    text: bin k holds [k/10, (k+1)/10), 5.0 goes to bin 49. The pipeline's float32 labels binned
    by ranksim.methods.binning must give the same counts."""
    many = [0, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44, 46, 48, 49]
    medium = [2, 4, 6, 8, 27, 35, 37]
    few = [k for k in range(50) if k not in many and k not in medium]
    assert len(many) == 22 and len(medium) == 7 and len(few) == 21

    expected = {"many": 0, "medium": 0, "few": 0}
    with open(REAL_ROOT / "test_new.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    for r in rows:
        score = Decimal(r[9])
        k = 49 if score == 5 else int(score * 10)
        region = "many" if k in many else "medium" if k in medium else "few"
        expected[region] += 1
    assert all(c > 0 for c in expected.values())
    assert sum(expected.values()) == 1000
    assert expected == {"many": 775, "medium": 175, "few": 50}  # regression guard, from the loop above

    from ranksim.methods.binning import STS_B_SHOT_BINS, label_bins
    bins = label_bins(real_data.labels("test"), "sts_b")
    got = {region: int(np.isin(bins, STS_B_SHOT_BINS[region]).sum()) for region in expected}
    assert got == expected


@needs_real
def test_real_vocabulary_order_and_cap(real_data):
    vocab = real_data.vocab
    assert vocab[:2] == [PAD, UNK]
    assert len(vocab) == len(set(vocab)) <= 30000 + 2
    # Slow recount in the authors' order (SPEC 6): every sentence 1 of a split, then every
    # sentence 2, train, val, test; truncated to 40; a stable sort by frequency.
    counts = {}
    for name in SPLIT_FILES.values():
        text = read_sts_tsv(REAL_ROOT / name)
        for column in (text.sentence1, text.sentence2):
            for s in column:
                for t in tokenize(s, 40, real_data.tokenizer):
                    counts[t] = counts.get(t, 0) + 1
    assert vocab == [PAD, UNK] + sorted(counts, key=lambda w: -counts[w])

    capped = load_sts_b(REAL_ROOT, max_vocab=100)
    assert capped.vocab == vocab[:102]
    # Every id is in range and tokens beyond the cap became <unk> (index 1).
    ds = capped.dataset("train")
    ids = torch.cat([torch.cat(ds[i][0]) for i in range(200)])
    assert int(ids.max()) < 102 and int(ids.min()) >= 1 and (ids == 1).any()


@needs_real
def test_real_batches(real_data):
    weights = np.arange(5249, dtype=np.float32)
    ds = real_data.dataset("train", weights=weights)
    (s1, s2), target, weight = ds[3]
    assert s1.dtype == torch.long and s1.dim() == 1 and 1 <= len(s1) <= 40
    assert target.shape == (1,) and target.dtype == torch.float32 and float(target) == real_data.labels("train")[3]
    assert float(weight) == 3.0
    (b1, l1, b2, l2), targets, weights_b = collate_sts_b([ds[i] for i in range(6)])
    assert b1.shape == (6, int(l1.max())) and b2.shape == (6, int(l2.max()))
    assert targets.shape == weights_b.shape == (6, 1)
    for i in range(6):
        assert (b1[i, l1[i]:] == 0).all() and (b1[i, :l1[i]] != 0).all()
    with pytest.raises(ValueError, match="shape"):
        real_data.dataset("train", weights=np.ones(3))
    with pytest.raises(ValueError, match="valid splits"):
        real_data.labels("dev")


# ------------------------------------------------------------------------------------------
# Reading and tokens on small files
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (row("A man.", "A dog.", "3.2")[:9], "9 tab-separated columns"),
    (row("A man.", "A dog.", "high"), "not a number"),
    (row("A man.", "A dog.", "5.2"), "outside"),
    (row("A man.", "A dog.", "-0.1"), "outside"),
    (row("A man.", "A dog.", "nan"), "outside"),
])
def test_malformed_row_names_file_and_line(tmp_path, bad, message):
    path = write_tsv(tmp_path / "train_new.tsv", [row("A cat sits.", "A cat sat.", "4.0"), bad,
                                                  row("x", "y", "1")])
    with pytest.raises(UserError, match=message) as info:
        read_sts_tsv(path)
    assert "train_new.tsv, line 3" in str(info.value)


def test_empty_sentence_and_bad_header_are_user_errors(tmp_path):
    path = write_tsv(tmp_path / "dev_new.tsv", [row("A cat.", "A dog.", "1"), row("A cat.", "  ", "1")])
    with pytest.raises(UserError, match="dev_new.tsv, line 3: a sentence has no token"):
        tokenise_split(path)
    with pytest.raises(UserError, match="line 1: header"):
        read_sts_tsv(write_tsv(tmp_path / "x.tsv", [row("a", "b", "1")], header=HEADER[:7] + ["s1", "s2", "y"]))


def test_quotes_are_plain_characters(tmp_path):
    # With quoting on, csv would swallow the tab after the opening quote and merge columns.
    path = write_tsv(tmp_path / "t.tsv", [row('He said "hi', "ok'", "2.5"), row('"', 'x"y', "0")])
    text = read_sts_tsv(path)
    assert text.sentence1 == ['He said "hi', '"'] and text.sentence2 == ["ok'", 'x"y']
    assert text.scores.tolist() == [2.5, 0.0]


def test_missing_folder_or_file_names_prepare_command(tmp_path):
    with pytest.raises(UserError, match="prepare sts_b --root"):
        load_sts_b(tmp_path / "nowhere")
    write_tsv(tmp_path / "train_new.tsv", [row("a", "b", "1")])
    with pytest.raises(UserError, match="dev_new.tsv, test_new.tsv.*prepare sts_b"):
        load_sts_b(tmp_path)


def test_vocabulary_cap_ties_and_unknown():
    """Counts: b 3, a 2, c 2, d 1. a and c tie; a is seen first, so a precedes c."""
    sentences = [["b", "a", "b"], ["c", "d"], ["a", "c", "b"]]
    assert build_vocab(sentences, max_vocab=10) == [PAD, UNK, "b", "a", "c", "d"]
    capped = build_vocab(sentences, max_vocab=2)
    assert capped == [PAD, UNK, "b", "a"]
    ids, lengths = encode([["c", "b"], ["a"]], {w: i for i, w in enumerate(capped)}, max_seq_len=3)
    assert ids.tolist() == [[1, 2, 0], [3, 0, 0]] and lengths.tolist() == [2, 1]


def test_vocabulary_counts_in_the_authors_order(tmp_path):
    """Ties keep the authors' first-seen order: all sentence 1s of train, then its sentence 2s,
    then val's, then test's; not row by row. Counts: d e f 2, b c a g 1."""
    write_tsv(tmp_path / "train_new.tsv", [row("b", "a", "1.0", 0), row("c", "d", "2.0", 1)])
    write_tsv(tmp_path / "dev_new.tsv", [row("d e", "f", "3.0", 2)])
    write_tsv(tmp_path / "test_new.tsv", [row("f", "e g", "4.0", 3)])
    # first seen: b c (train s1), a d (train s2), d e (val s1), f (val s2), f (test s1), e g (test s2)
    assert load_sts_b(tmp_path, tokenizer="no_punkt").vocab == [PAD, UNK, "d", "e", "f", "b", "c", "a", "g"]


def fake_punkt(monkeypatch):
    """punkt 'installed': nltk.word_tokenize splits sentences with a stand-in for the model
    (its data cannot be downloaded here), after each full stop followed by a space."""
    import nltk.tokenize

    monkeypatch.setattr(sts_text, "punkt_installed", lambda: True)
    monkeypatch.setattr(nltk.tokenize, "sent_tokenize",
                        lambda text, language="english": re.split(r"(?<=\.) ", text))


def test_punkt_tokenizer_when_installed_and_the_fallback(tmp_path, monkeypatch, caplog):
    write_tsv(tmp_path / "train_new.tsv", [row("Hello there. How are you?", "Fine.", "1.0", 0)])
    write_tsv(tmp_path / "dev_new.tsv", [row("there", "you", "3.0", 1)])
    write_tsv(tmp_path / "test_new.tsv", [row("Hello", "How", "4.0", 2)])
    # Without punkt data (as here): the whole field is one sentence; the inner full stop stays on its word.
    monkeypatch.setattr(sts_text, "punkt_installed", lambda: False)
    # The notice is an INFO line of the "ranksim" logger, which train.py's setup_logging (run by
    # earlier tests in this process) stops from propagating to caplog's root handler.
    monkeypatch.setattr(logging.getLogger("ranksim"), "propagate", True)
    caplog.set_level(logging.INFO, logger="ranksim")
    fallback = load_sts_b(tmp_path)
    assert fallback.tokenizer == "no_punkt" and "there." in fallback.vocab
    assert "punkt_tab" in caplog.text  # the fallback says how to get the authors' tokenizer
    with pytest.raises(UserError, match="punkt.*python -m nltk.downloader punkt_tab"):
        load_sts_b(tmp_path, tokenizer="punkt")
    # With punkt: nltk.word_tokenize, sentences first, as the authors; the file is tokenised again.
    fake_punkt(monkeypatch)
    assert tokenize("Hello there. How are you?", tokenizer="punkt") == ["Hello", "there", ".", "How", "are", "you", "?"]
    data = load_sts_b(tmp_path)
    assert data.tokenizer == "punkt" and "there." not in data.vocab and "there" in data.vocab
    assert load_sts_b(tmp_path, tokenizer="no_punkt").vocab == fallback.vocab


def test_tokenizer_needs_no_nltk_data_and_truncates():
    tokens = tokenize("A man's \"quoted\" words, (forty) of them!", max_seq_len=40)
    assert tokens == ["A", "man", "'s", "``", "quoted", "''", "words", ",", "(", "forty", ")", "of", "them", "!"]
    assert tokenize(" ".join(["w"] * 50), max_seq_len=40) == ["w"] * 40


# ------------------------------------------------------------------------------------------
# GloVe
# ------------------------------------------------------------------------------------------

def glove_lines(vectors: dict[str, np.ndarray]) -> str:
    return "".join(f"{w} {' '.join(f'{x:.6f}' for x in v)}\n" for w, v in vectors.items())


def tiny_glove(dim: int = 300):
    rng = np.random.default_rng(123)
    known = {w: rng.uniform(-1, 1, dim).astype(np.float32) for w in ["the", "cat", ".", "A"]}
    # A few 840B words contain spaces, and some appear twice: the last line wins, as in the authors' code.
    text = glove_lines(known) + "big cat " + " ".join(["9"] * dim) + "\n" + "cat " + " ".join(["7"] * dim) + "\n"
    return known, text


def test_glove_matrix_known_unknown_and_padding(tmp_path):
    known, text = tiny_glove()
    path = tmp_path / "glove.txt"
    path.write_text(text, encoding="utf-8")
    vocab = [PAD, UNK, "the", "dog", "cat", "A", "big"]
    matrix, found = build_glove_matrix(path, vocab, seed=5, progress=False)
    assert matrix.shape == (7, 300) and matrix.dtype == np.float32
    assert found.tolist() == [False, False, True, False, True, True, False]
    np.testing.assert_allclose(matrix[2], known["the"], atol=1e-6)
    np.testing.assert_array_equal(matrix[4], np.full(300, 7, dtype=np.float32))  # the later "cat 7 7 ..."
    np.testing.assert_allclose(matrix[5], known["A"], atol=1e-6)
    # Unknown words (and <unk>) keep the seeded N(0, 1) draw; "big" is not "big cat".
    draw = np.random.default_rng(5).standard_normal((7, 300), dtype=np.float32)
    for i in (1, 3, 6):
        np.testing.assert_array_equal(matrix[i], draw[i])
    assert not matrix[0].any()

    # The same from a zip, as downloaded.
    with zipfile.ZipFile(tmp_path / "g.zip", "w") as zf:
        zf.writestr("glove.840B.300d.txt", text)
    from_zip, _ = build_glove_matrix(tmp_path / "g.zip", vocab, seed=5, progress=False)
    np.testing.assert_array_equal(from_zip, matrix)

    bad = tmp_path / "bad.txt"
    bad.write_text("the 1 2 3\n", encoding="utf-8")
    with pytest.raises(UserError, match="bad.txt, line 1: 3 values, expected 300"):
        build_glove_matrix(bad, vocab, progress=False)


def test_embedding_cache_records_its_vocabulary(tmp_path):
    vocab = [PAD, UNK, "x", "y"]
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_embedding_cache(tmp_path, vocab, matrix)
    np.testing.assert_array_equal(read_embedding_cache(tmp_path, vocab, "HINT"), matrix)
    assert read_glove_rows(tmp_path, vocab) is None  # which rows are GloVe's was not recorded
    found = np.array([False, False, True, False])
    write_embedding_cache(tmp_path, vocab, matrix, found)
    rows = read_glove_rows(tmp_path, vocab)
    np.testing.assert_array_equal(rows[0], matrix) and np.testing.assert_array_equal(rows[1], found)
    assert read_glove_rows(tmp_path, [PAD, UNK, "y", "x"]) is None
    with pytest.raises(UserError, match="different vocabulary.*index 3.*HINT"):
        read_embedding_cache(tmp_path, [PAD, UNK, "x", "z"], "HINT")
    with pytest.raises(UserError, match="no cached GloVe matrix.*HINT"):
        read_embedding_cache(tmp_path / "empty", vocab, "HINT")


# ------------------------------------------------------------------------------------------
# Rebuilding the split
# ------------------------------------------------------------------------------------------

def make_glue(folder: Path, per_bin: list[int]) -> None:
    """GLUE-format train.tsv/dev.tsv with per_bin[b] pairs in 0.25-wide bin b; bin edges,
    5.0 and the various score spellings of GLUE are included."""
    rows, i = [], 0
    for b, n in enumerate(per_bin):
        for j in range(n):
            score = 5.0 if (b == 19 and j % 2) else b * 0.25 + (j % 5) * 0.05
            text = ["%.3f", "%.2f", "%g"][j % 3] % score
            rows.append(row(f"Sentence number {i}.", f"Pair of {i} with \"quote", text, i))
            i += 1
    rng = np.random.default_rng(0)
    rng.shuffle(rows)
    folder.mkdir(parents=True, exist_ok=True)
    write_tsv(folder / "train.tsv", rows[: len(rows) * 4 // 5])
    write_tsv(folder / "dev.tsv", rows[len(rows) * 4 // 5:])


def test_rebuild_is_seed_stable_capped_and_disjoint(tmp_path):
    per_bin = [120, 9, 100, 99, 30, 250] + [105] * 14
    make_glue(tmp_path / "glue", per_bin)
    counts = rebuild_splits(tmp_path / "glue", tmp_path / "a", seed=0)
    rebuild_splits(tmp_path / "glue", tmp_path / "b", seed=0)
    rebuild_splits(tmp_path / "glue", tmp_path / "c", seed=1)
    names = SPLIT_FILES.values()
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
    assert any((tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes() for n in names)

    texts = {s: read_sts_tsv(tmp_path / "a" / n) for s, n in SPLIT_FILES.items()}
    assert {s: len(t.rows) for s, t in texts.items()} == counts
    # Per bin (slow loop over the 20 bins of width 0.25): dev and test get 50 each from a bin of
    # 100 or more pairs, n // 3 each from a smaller one.
    for split in ("val", "test"):
        per = [0] * 20
        for score in texts[split].scores:
            per[19 if score == 5 else int(Decimal(str(float(score))) / Decimal("0.25"))] += 1
        assert per == [50 if n >= 100 else n // 3 for n in per_bin], split
    ids = {s: [r[4] for r in t.rows] for s, t in texts.items()}
    assert not set(ids["train"]) & set(ids["val"]) and not set(ids["train"]) & set(ids["test"])
    assert not set(ids["val"]) & set(ids["test"])
    assert sum(len(v) for v in ids.values()) == sum(per_bin)
    for t in texts.values():  # column 0 renumbered, header kept
        assert [r[0] for r in t.rows] == [str(i) for i in range(len(t.rows))] and t.header == HEADER


def test_rebuild_command_guards(tmp_path, capsys):
    make_glue(tmp_path / "glue", [110] * 20)
    out = tmp_path / "out"
    assert prepare_sts_b_main(["--root", str(out), "--rebuild", "--glue-dir", str(tmp_path / "glue")]) == 0
    table = capsys.readouterr().out
    assert "train" in table and "5,249" in table and "(differs)" in table
    with pytest.raises(UserError, match="--force"):
        prepare_sts_b_main(["--root", str(out), "--rebuild", "--glue-dir", str(tmp_path / "glue")])
    with pytest.raises(UserError, match="needs --glue-dir"):
        prepare_sts_b_main(["--root", str(out), "--rebuild"])
    with pytest.raises(UserError, match="train.tsv does not exist"):
        prepare_sts_b_main(["--root", str(tmp_path / "o2"), "--rebuild", "--glue-dir", str(tmp_path)])


# ------------------------------------------------------------------------------------------
# Downloads (no internet: a replaced download function, or a local http.server)
# ------------------------------------------------------------------------------------------

@pytest.fixture
def http_dir(tmp_path):
    """Serve tmp_path/'www' on 127.0.0.1; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@needs_real
def test_download_splits_checks_hashes(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_download(url, dest, expected_size=None):
        calls.append(url)
        shutil.copyfile(REAL_ROOT / url.rsplit("/", 1)[1], dest)
        return dest

    monkeypatch.setattr(published, "_download", fake_download)
    root = tmp_path / "sts"
    assert prepare_sts_b_main(["--root", str(root)]) == 0
    assert all(u.startswith(RANKSIM_SOURCE.base_urls[0]) for u in calls) and len(calls) == 3
    table = capsys.readouterr().out
    assert re.search(r"^train\s+train_new.tsv\s+5,249\s+5,249$", table, re.M) and "(differs)" not in table
    # Already there and matching: nothing is fetched again.
    prepare_sts_b_main(["--root", str(root)])
    assert len(calls) == 3

    # A corrupted file is refused without --force, and a wrong download is deleted.
    (root / "dev_new.tsv").write_text("index\n", encoding="utf-8")
    with pytest.raises(UserError, match="differs from the published"):
        download_splits(root)
    monkeypatch.setattr(published, "_download", lambda url, dest, expected_size=None: Path(dest).write_text("x"))
    with pytest.raises(UserError, match="SHA-256 differs"):
        download_splits(root, force=True)
    assert not (root / "dev_new.tsv").exists()


def test_download_falls_back_to_head_and_serves_over_http(tmp_path, http_dir, monkeypatch, capsys):
    """The DIR source has no recorded hashes, so small generated files can stand in for it."""
    www, base = http_dir
    for name in SPLIT_FILES.values():
        write_tsv(www / name, [row(f"A man {i}.", "A dog.", f"{i % 6}", i) for i in range(4)])
    pinned, head = DIR_SOURCE.base_urls
    calls = []

    def fake_download(url, dest, expected_size=None):
        calls.append(url)
        if url.startswith(pinned):
            raise UserError(f"cannot reach {url}")
        shutil.copyfile(www / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(published, "_download", fake_download)
    assert prepare_sts_b_main(["--root", str(tmp_path / "a"), "--source", "dir"]) == 0
    assert [u.startswith(head) for u in calls] == [False, True] * 3
    assert capsys.readouterr().out.count("(differs)") == 3

    monkeypatch.undo()
    assert prepare_sts_b_main(["--root", str(tmp_path / "b"), "--source", "dir", "--base-url", base]) == 0
    for name in SPLIT_FILES.values():
        assert (tmp_path / "b" / name).read_bytes() == (www / name).read_bytes()


@needs_real
def test_download_over_local_http(tmp_path, http_dir):
    www, base = http_dir
    for name in SPLIT_FILES.values():
        shutil.copyfile(REAL_ROOT / name, www / name)
    from ranksim.data.prepare import main
    root = tmp_path / "sts"
    assert main(["sts_b", "--root", str(root), "--base-url", base]) == 0
    assert all(published.matches_published(root / n, RANKSIM_SOURCE.files[n]) for n in SPLIT_FILES.values())
    # Unreachable server: a user error (exit status 2), not a traceback.
    assert main(["sts_b", "--root", str(tmp_path / "other"), "--base-url", "http://127.0.0.1:9/"]) == 2


@needs_real
def test_glove_command_over_local_http_then_load(tmp_path, http_dir, real_data, capsys):
    www, base = http_dir
    known, text = tiny_glove()
    with zipfile.ZipFile(www / "glove.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("glove.840B.300d.txt", text)
    glove_dir = tmp_path / "glove"
    with pytest.raises(UserError, match="no cached GloVe matrix.*prepare glove"):
        load_sts_b(REAL_ROOT, glove_dir=glove_dir)
    assert prepare_glove_main(["--root", str(glove_dir), "--sts-b-root", str(REAL_ROOT),
                                     "--url", base + "glove.zip"]) == 0
    assert (glove_dir / GLOVE_ZIP).is_file()
    assert re.search(r"^in GloVe\s+4 ", capsys.readouterr().out, re.M)
    data = load_sts_b(REAL_ROOT, glove_dir=glove_dir)
    assert data.vocab == real_data.vocab
    emb = data.embeddings
    assert emb.shape == (len(data.vocab), 300) and emb.dtype == np.float32 and not emb[0].any()
    for word, vector in {**known, "cat": np.full(300, 7.0)}.items():  # "cat": its last line
        np.testing.assert_allclose(emb[data.vocab.index(word)], vector, atol=1e-6)
    # Another max_vocab is another vocabulary: the cache says so instead of misaligning rows.
    with pytest.raises(UserError, match="different vocabulary.*--max-vocab 50"):
        load_sts_b(REAL_ROOT, glove_dir=glove_dir, max_vocab=50)


# ------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------

def small_batch(b: int = 6, vocab: int = 50, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    len1 = torch.randint(1, 9, (b,), generator=g)
    len2 = torch.randint(1, 12, (b,), generator=g)
    s1 = torch.randint(2, vocab, (b, int(len1.max())), generator=g)
    s2 = torch.randint(2, vocab, (b, int(len2.max())), generator=g)
    s1[torch.arange(s1.shape[1])[None] >= len1[:, None]] = 0
    s2[torch.arange(s2.shape[1])[None] >= len2[:, None]] = 0
    targets = torch.rand(b, 1, generator=g) * 5
    return (s1, len1, s2, len2), targets


def test_model_shapes_backward_and_frozen_embeddings():
    from ranksim.models.bilstm import BiLSTMRegressor
    torch.manual_seed(0)
    inputs, targets = small_batch()
    model = BiLSTMRegressor(50, embedding_dim=16, hidden_size=8)
    pred, features = model(inputs)
    assert pred.shape == (6, 1) and features.shape == (6, 64)
    ((pred - targets / 5) ** 2).mean().backward()
    assert model.embedding.weight.grad is not None and model.lstm.weight_hh_l1.grad.abs().sum() > 0

    pretrained = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    frozen = BiLSTMRegressor(50, embedding_dim=16, hidden_size=8, embeddings=pretrained)
    np.testing.assert_array_equal(frozen.embedding.weight.detach().numpy(), pretrained)
    frozen(inputs)[0].sum().backward()
    assert frozen.embedding.weight.grad is None and not frozen.embedding.weight.requires_grad
    with pytest.raises(ValueError, match=r"\(49, 16\)"):
        BiLSTMRegressor(50, embedding_dim=16, hidden_size=8, embeddings=pretrained[:49])


def test_model_rejects_bad_shapes():
    from ranksim.models.bilstm import BiLSTMRegressor
    model = BiLSTMRegressor(50, embedding_dim=8, hidden_size=4)
    (s1, len1, s2, len2), _ = small_batch()
    with pytest.raises(ValueError, match=r"\(6, 8\).*\(5,\)"):
        model((s1, len1[:5], s2, len2))
    with pytest.raises(ValueError, match="len2 must lie in"):
        model((s1, len1, s2, len2 + 20))
    with pytest.raises(ValueError, match="integers"):
        model((s1.float(), len1, s2, len2))


def test_max_pool_ignores_padding():
    """In eval mode, extra padding columns and the other sentences of the batch change nothing."""
    from ranksim.models.bilstm import BiLSTMRegressor
    torch.manual_seed(0)
    model = BiLSTMRegressor(50, embedding_dim=8, hidden_size=6).eval()
    (s1, len1, s2, len2), _ = small_batch()
    with torch.no_grad():
        base = model.features((s1, len1, s2, len2))
        padded = model.features((torch.nn.functional.pad(s1, (0, 7)), len1, s2, len2))
        alone = model.features((s1[2:3, :int(len1[2])], len1[2:3], s2[2:3, :int(len2[2])], len2[2:3]))
        # Garbage in the padded positions must not leak into the features either.
        noisy = s1.clone()
        noisy[torch.arange(s1.shape[1])[None] >= len1[:, None]] = 7
        noisy_features = model.features((noisy, len1, s2, len2))
    torch.testing.assert_close(padded, base)
    torch.testing.assert_close(alone, base[2:3])
    torch.testing.assert_close(noisy_features, base)
    # Max pooling, not mean: every feature of u is the max over real steps, so it is finite.
    assert torch.isfinite(base).all()


def test_model_with_ranksim_regularizer():
    from ranksim.models.bilstm import BiLSTMRegressor
    torch.manual_seed(0)
    inputs, targets = small_batch(b=8)
    model = BiLSTMRegressor(50, embedding_dim=16, hidden_size=8).train()
    pred, features = model(inputs, targets, 0)
    reg = batchwise_ranking_regularizer(features, targets, 2.0)
    assert reg.dim() == 0 and torch.isfinite(reg)
    (((pred - targets / 5) ** 2).mean() + 3e-4 * reg).backward()
    assert model.lstm.weight_ih_l0.grad.abs().sum() > 0


def test_model_with_fds_and_ranksim():
    """FDS (50 STS-B bins, clip (0.5, 2)) in the head, RankSim on the returned features.

    Statistics are updated at the end of epochs 0 and 1 (SPEC 4), so epoch 2 is calibrated with
    non-trivial statistics: the prediction then differs from the linear layer on the raw features.
    """
    from ranksim.models.bilstm import BiLSTMRegressor
    torch.manual_seed(0)
    inputs, targets = small_batch(b=8)
    fds = FDS(64, bucket_num=50, bucket_start=0, binning="sts_b", clip_min=0.5, clip_max=2.0)
    model = BiLSTMRegressor(50, embedding_dim=16, hidden_size=8, dropout=0.0, fds=fds).train()
    for epoch in (0, 1, 2):
        pred, features = model(inputs, targets, epoch)
        assert pred.shape == (8, 1) and features.shape == (8, 64)
        reg = batchwise_ranking_regularizer(features, targets, 2.0)
        loss = ((pred - targets / 5) ** 2).mean() + 3e-4 * reg
        assert torch.isfinite(loss)
        model.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in model.parameters() if p.requires_grad)
        with torch.no_grad():
            fds.update_last_epoch_stats(epoch)
            # Perturbed copies so that every bucket present has a non-zero variance.
            noisy = torch.cat([features, features + 0.1 * torch.randn_like(features)])
            fds.update_running_stats(noisy, torch.cat([targets, targets]), epoch)
    assert not torch.allclose(pred, model.head.linear(features))


def test_offline_download_gives_one_message_naming_every_file(tmp_path, monkeypatch, caplog):
    """Offline, both URLs of every file fail alike: one error naming the three files and where to
    put them, the by-hand hint once, and no empty root folder left behind."""
    from ranksim.data.download import DownloadFailed

    def offline(url, dest, expected_size=None):
        raise DownloadFailed(f"cannot reach {url} (no network). Download {url} by hand", "cannot reach host: no network")

    monkeypatch.setattr(published, "_download", offline)
    root = tmp_path / "sts"
    with caplog.at_level(logging.INFO), pytest.raises(UserError) as err:
        download_splits(root)
    message = str(err.value)
    assert "train_new.tsv, dev_new.tsv, test_new.tsv by hand from " + RANKSIM_SOURCE.base_urls[0] in message
    assert message.count("by hand") == 1 and message.count("no network") == 1 and str(root) in message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not root.exists()
    root.mkdir()  # a folder the command did not make stays, even empty
    with pytest.raises(UserError):
        download_splits(root)
    assert root.is_dir()
