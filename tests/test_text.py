"""Text features and the generated corpora: tokens, vocabulary, bag of words, TF-IDF, padding,
language-model windows, the two datasets and sequence labels in Dataset.

References are independent: vectors computed by hand here, scikit-learn's TfidfVectorizer,
loops written here, and each corpus' rule re-derived from its text.
"""
import doctest
import math
import re
from pathlib import Path

import numpy as np
import pytest

from jaxnets import data
from jaxnets.cli import main
from jaxnets.data import Dataset, text
from jaxnets.data.text import (GRAMMAR_VOCAB, GRAMMAR_WORDS, REVIEW_VOCAB, REVIEW_WORDS, Vocabulary,
                               bag_of_words, grammar_sentences, idf_weights, lm_windows,
                               pad_sequences, review_sentences, tf_idf, tokenize)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- tokens and vocabulary

@pytest.mark.parametrize("raw, tokens", [
    ("The movie was GOOD!", ["the", "movie", "was", "good"]),
    ("don't  stop--now", ["don", "t", "stop", "now"]),
    ("R2-D2 has 3 legs_and_wheels", ["r2", "d2", "has", "3", "legs", "and", "wheels"]),
    ("Café ÉCLAIR, naïve", ["café", "éclair", "naïve"]),
    ("  ...  ", []),
    ("", []),
])
def test_tokenize(raw, tokens):
    assert tokenize(raw) == tokens


def test_vocabulary_build_order_and_limits():
    texts = ["b a b c", "b a d", "e"]          # counts: b 3, a 2, c 1, d 1, e 1
    assert Vocabulary.build(texts).tokens == ("<pad>", "<unk>", "b", "a", "c", "d", "e")
    assert Vocabulary.build(texts, min_count=2).tokens == ("<pad>", "<unk>", "b", "a")
    assert Vocabulary.build(texts, max_size=4).tokens == ("<pad>", "<unk>", "b", "a")
    assert Vocabulary.build(texts, max_size=5, specials=("<eos>",)).tokens == (
        "<pad>", "<unk>", "<eos>", "b", "a")
    # Lists of tokens are used as given.
    assert Vocabulary.build([["x", "x", "y"]]).tokens == ("<pad>", "<unk>", "x", "y")


def test_vocabulary_encode_decode():
    vocab = Vocabulary(("<pad>", "<unk>", "good", "movie"))
    assert len(vocab) == 4
    assert vocab.encode("A good, GOOD movie!") == [1, 2, 2, 3]
    assert vocab.decode([2, 3, 0]) == ["good", "movie", "<pad>"]
    assert vocab.decode(vocab.encode("good movie")) == ["good", "movie"]
    with pytest.raises(ValueError, match=r"^ids: got 4; allowed: integers 0 \.\. 3$"):
        vocab.decode([4])


@pytest.mark.parametrize("kwargs, message", [
    (dict(tokens=("<unk>", "<pad>")), "tokens: got ('<unk>', '<pad>') first; allowed: ('<pad>', '<unk>') first"),
    (dict(tokens=("<pad>", "<unk>", "a", "a")), "tokens: got 'a' twice; allowed: unique tokens"),
])
def test_vocabulary_rejects_bad_tables(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        Vocabulary(**kwargs)


def test_vocabulary_build_rejects_bad_limits():
    with pytest.raises(ValueError, match=r"^min_count: got 0; allowed: an integer >= 1$"):
        Vocabulary.build(["a"], min_count=0)
    with pytest.raises(ValueError, match=r"^max_size: got 2; allowed: None or an integer >= 3"):
        Vocabulary.build(["a"], max_size=2, specials=("<eos>",))
    with pytest.raises(ValueError, match=r"^texts: got a single str; allowed: a sequence of texts$"):
        Vocabulary.build("a b")


# ---------------------------------------------------------------- bag of words and TF-IDF

VOCAB = Vocabulary(("<pad>", "<unk>", "a", "b", "c"))


def test_bag_of_words_by_hand():
    counts = bag_of_words(["a b b", "c, A!", "b zebra zebra", ""], VOCAB)
    assert counts.dtype == np.float32
    np.testing.assert_array_equal(counts, [
        [0, 0, 1, 2, 0],
        [0, 0, 1, 0, 1],
        [0, 2, 0, 1, 0],      # "zebra" twice: the <unk> column
        [0, 0, 0, 0, 0],
    ])
    # Order is lost: the two reviews of the slides' kind get the same row.
    vocab = REVIEW_VOCAB
    rows = bag_of_words(["the plot was good but slow", "the plot was slow but good"], vocab)
    np.testing.assert_array_equal(rows[0], rows[1])


def test_tf_idf_by_hand():
    texts = ["a b b", "a c"]
    # N = 2; df: a 2, b 1, c 1; idf = ln(3 / (1 + df)) + 1.
    idf_a, idf_b = math.log(3 / 3) + 1, math.log(3 / 2) + 1
    idf_c = idf_b
    np.testing.assert_allclose(idf_weights(bag_of_words(texts, VOCAB))[2:], [idf_a, idf_b, idf_c])
    w0 = np.array([1 * idf_a, 2 * idf_b, 0.0])
    w1 = np.array([1 * idf_a, 0.0, 1 * idf_c])
    expected = np.zeros((2, 5))
    expected[0, 2:] = w0 / math.sqrt(w0 @ w0)
    expected[1, 2:] = w1 / math.sqrt(w1 @ w1)
    np.testing.assert_allclose(tf_idf(texts, VOCAB), expected, atol=1e-7)
    # An all-unknown or empty text stays a zero row; unknown words do not dilute the others.
    np.testing.assert_array_equal(tf_idf(["zebra", ""], VOCAB), np.zeros((2, 5)))
    np.testing.assert_allclose(tf_idf(["a b b zebra", "a c"], VOCAB), expected, atol=1e-7)


def _sklearn_tfidf(train, test):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None)
    fitted = vectorizer.fit_transform(train).toarray()
    return vectorizer.get_feature_names_out(), fitted, vectorizer.transform(test).toarray()


def test_tf_idf_matches_sklearn():
    texts, _ = review_sentences(80, seed=3)
    train = texts[:60] + ["The plot, the plot and THE ending!", "a brand new word"]
    test = texts[60:] + ["words nobody saw: zebra, quokka", "the the the"]
    names, ref_train, ref_test = _sklearn_tfidf(train, test)
    vocab = Vocabulary.build(train)
    columns = [vocab.id(name) for name in names]
    assert sorted(columns) == list(range(2, len(vocab)))      # the same terms
    ours_train = tf_idf(train, vocab)
    np.testing.assert_allclose(ours_train[:, columns], ref_train, atol=1e-6)
    assert not ours_train[:, :2].any()
    # Test texts weighted with the training idf, unknown words dropped, as sklearn does.
    idf = idf_weights(bag_of_words(train, vocab))
    ours_test = tf_idf(test, vocab, idf=idf)
    np.testing.assert_allclose(ours_test[:, columns], ref_test, atol=1e-6)
    assert not ours_test[:, :2].any()


def test_tf_idf_rejects_a_wrong_idf():
    with pytest.raises(ValueError, match=r"^idf: got shape \(3,\); allowed: \(5,\), one weight per token$"):
        tf_idf(["a"], VOCAB, idf=np.ones(3))


# ---------------------------------------------------------------- padding and windows

def test_pad_sequences():
    seqs = [[5, 6, 7], [8], []]
    np.testing.assert_array_equal(pad_sequences(seqs), [[5, 6, 7], [8, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(pad_sequences(seqs, 2), [[5, 6], [8, 0], [0, 0]])
    np.testing.assert_array_equal(pad_sequences(seqs, 2, truncate="pre"), [[6, 7], [8, 0], [0, 0]])
    np.testing.assert_array_equal(pad_sequences(seqs, 4, pad_id=9), [[5, 6, 7, 9], [8, 9, 9, 9],
                                                                     [9, 9, 9, 9]])
    assert pad_sequences(seqs).dtype == np.int32
    with pytest.raises(ValueError, match=r"^truncate: got 'middle'; allowed: post, pre$"):
        pad_sequences(seqs, 2, truncate="middle")
    with pytest.raises(ValueError, match=r"^max_len: got 0; allowed: None or an integer >= 1$"):
        pad_sequences(seqs, 0)


@pytest.mark.parametrize("seq_len, stride", [(4, None), (4, 1), (3, 2), (1, 1)])
def test_lm_windows_against_a_loop(seq_len, stride):
    stream = list(range(100, 117))                           # 17 tokens
    x, y = lm_windows(stream, seq_len, stride=stride)
    step = seq_len if stride is None else stride
    xs, ys = [], []
    start = 0
    while start + seq_len + 1 <= len(stream):
        xs.append(stream[start: start + seq_len])
        ys.append(stream[start + 1: start + seq_len + 1])
        start += step
    np.testing.assert_array_equal(x, xs)
    np.testing.assert_array_equal(y, ys)
    assert x.dtype == y.dtype == np.int32


def test_lm_windows_rejects_a_short_stream():
    with pytest.raises(ValueError, match=r"^token_ids: got 4 tokens; allowed: at least seq_len \+ 1 = 5$"):
        lm_windows([1, 2, 3, 4], 4)


def test_unigram_entropy():
    assert text.unigram_entropy([7, 7, 7]) == 0.0
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert abs(text.unigram_entropy([1, 1, 2, 3]) - expected) < 1e-12


# ---------------------------------------------------------------- the generated corpora

def test_grammar_sentences_agree_in_number():
    words = {k: set(v) for k, v in GRAMMAR_WORDS.items()}
    sentences = grammar_sentences(300, seed=1)
    assert sentences == grammar_sentences(300, seed=1) != grammar_sentences(300, seed=2)
    seen_vp = set()
    for sentence in sentences:
        tokens = sentence.split()
        assert all(GRAMMAR_VOCAB.id(t) > 2 for t in tokens)             # no <unk>
        nouns = [i for i, t in enumerate(tokens) if t in words["noun_sg"] | words["noun_pl"]]
        subject, verb = tokens[nouns[0]], tokens[nouns[0] + 1]
        plural = subject in words["noun_pl"]
        assert verb in (words["vt_pl"] | words["vi_pl"] if plural else
                        words["vt_sg"] | words["vi_sg"]), sentence
        determiner = tokens[0]
        assert determiner in (words["det_pl"] if plural else words["det_sg"]), sentence
        seen_vp.add("vt" if verb in words["vt_sg"] | words["vt_pl"] else
                    "vi+pp" if len(tokens) > nouns[0] + 2 else "vi")
    assert seen_vp == {"vt", "vi", "vi+pp"}


def _review_label(review: str) -> int:
    clause = review.split(" was ")[1].split(" but ")[-1].split()
    positive_word = clause[-1] in REVIEW_WORDS["positive"]
    return int(positive_word != ("not" in clause))


def test_review_labels_follow_the_last_clause():
    texts, labels = review_sentences(400, seed=1)
    assert labels.dtype == np.int32
    assert [_review_label(t) for t in texts] == labels.tolist()
    assert 0.4 < labels.mean() < 0.6
    # Word order matters: some reviews share their bag of words but not their label.
    by_bag: dict = {}
    for review, label in zip(texts, labels.tolist()):
        by_bag.setdefault(tuple(sorted(review.split())), set()).add(label)
    assert sum(len(found) == 2 for found in by_bag.values()) > 5


def test_reviews_dataset():
    ds = data.load("reviews", n_train=50, n_test=20)
    texts, labels = review_sentences(70, seed=0)
    assert ds.task == "binary" and ds.output_dim == 1 and ds.x_train.dtype == np.float32
    assert ds.x_train.shape == (50, 12) and ds.x_test.shape == (20, 12)
    np.testing.assert_array_equal(np.concatenate([ds.y_train, ds.y_test]), labels)
    for row, review in zip(np.concatenate([ds.x_train, ds.x_test]), texts):
        n = len(review.split())
        assert REVIEW_VOCAB.decode(row[:n]) == review.split()
        assert not row[n:].any()                                    # right padding with 0


def test_grammar_lm_dataset():
    ds = data.load("grammar_lm", n_sentences=200, seq_len=8)
    assert ds.task == "multiclass" and ds.num_classes == len(GRAMMAR_VOCAB) == 37
    assert ds.class_names == GRAMMAR_VOCAB.tokens
    assert ds.y_train.shape == ds.x_train.shape and ds.y_train.dtype == np.int32
    x = ds.x_train.astype(np.int32)
    np.testing.assert_array_equal(x[:, 1:], ds.y_train[:, :-1])     # y is x shifted by one
    np.testing.assert_array_equal(x[1:, 0], ds.y_train[:-1, -1])    # windows follow each other
    sentences = grammar_sentences(200, seed=0)
    first = " ".join(GRAMMAR_VOCAB.decode(x[0]))
    assert first.startswith(sentences[0] + " <eos>")
    test_first = " ".join(GRAMMAR_VOCAB.decode(ds.x_test[0]))
    assert test_first.startswith(sentences[160] + " <eos>")          # the last 20 % of sentences
    with_val = data.load("grammar_lm", n_sentences=200, seq_len=8, validation=0.25, seed=1)
    assert with_val.num_val + with_val.num_train == ds.num_train and with_val.num_val > 0


# ---------------------------------------------------------------- sequence labels in Dataset

def _sequence_dataset(y_train, y_test, task="multiclass", k=5):
    n, m = len(y_train), len(y_test)
    return Dataset(x_train=np.zeros((n, 3), np.float32), y_train=np.asarray(y_train, np.int32),
                   x_val=np.zeros((0, 3), np.float32),
                   y_val=np.zeros((0, *np.shape(y_train)[1:]), np.int32),
                   x_test=np.zeros((m, 3), np.float32), y_test=np.asarray(y_test, np.int32),
                   task=task, num_classes=k)


def test_dataset_accepts_sequence_labels_for_multiclass_only():
    ds = _sequence_dataset([[0, 1, 4], [2, 3, 0]], [[1, 1, 1]])
    assert ds.output_dim == 5 and ds.y_train.shape == (2, 3)
    with pytest.raises(ValueError, match=r"^y_train: got label 5; allowed: 0 \.\. 4$"):
        _sequence_dataset([[0, 5, 1]], [[1, 1, 1]])
    with pytest.raises(ValueError, match=re.escape(
            "y_test.shape: got (1, 2); allowed: (n,) or (n, T) with the same T in every split")):
        _sequence_dataset([[0, 1, 1]], [[1, 1]])
    with pytest.raises(ValueError, match=re.escape("y_train.shape: got (1, 3); allowed: (n,)")):
        _sequence_dataset([[0, 1, 1]], [[1, 1, 1]], task="binary", k=2)
    split = _sequence_dataset([[i % 5] * 3 for i in range(10)], [[1, 1, 1]]).with_validation(0.3, 0)
    assert (split.num_train, split.num_val) == (7, 3) and split.y_val.shape == (3, 3)


# ---------------------------------------------------------------- docs, doctests, command line

def test_doctests():
    result = doctest.testmod(text)
    assert result.failed == 0 and result.attempted > 20


def test_docs_example_runs(capsys):
    page = (ROOT / "docs" / "text.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/text.md", "exec"), namespace)
    assert "bag of words cannot tell them apart: True" in capsys.readouterr().out


def test_cli_trains_the_language_model(tmp_path, capsys):
    status = main(["train", "--dataset", "grammar_lm", "--model", "transformer_lm", "--epochs", "1",
                   "--no-progress", "--out", str(tmp_path / "run")])
    assert status == 0
    assert "test_loss" in capsys.readouterr().out
    assert (tmp_path / "run" / "summary.json").exists()
