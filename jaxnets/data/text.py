"""Text features and two small generated corpora, all NumPy and all offline.

From raw strings to arrays, as in the slides' sentiment example:

* :func:`tokenize` — lowercase, then keep maximal runs of letters or digits;
* :class:`Vocabulary` — token ↔ id, with ``<pad>`` = 0 and ``<unk>`` = 1;
* :func:`bag_of_words` — one row of token counts per text (order is lost);
* :func:`tf_idf` — counts reweighted by inverse document frequency, rows
  L2-normalized (scikit-learn's default ``TfidfVectorizer`` formula);
* :func:`pad_sequences` — id lists to one rectangular (n, T) array;
* :func:`lm_windows` — a token stream cut into (input, next-token) windows for
  language modelling.

Two generated corpora feed the sequence models (``jaxnets.data.load`` knows them
as ``"grammar_lm"`` and ``"reviews"``); see :func:`grammar_sentences` and
:func:`review_sentences` for their exact generators and ``docs/text.md`` for a
walk-through. Nothing here downloads and nothing depends on JAX.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import re
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from jaxnets.data.dataset import Dataset

#: Padding token (id 0) and unknown-word token (id 1), first in every vocabulary.
PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
#: End-of-sentence token of the language-modelling corpus (id 2 there).
EOS = "<eos>"
#: Where :func:`pad_sequences` cuts sequences longer than ``max_len``.
TRUNCATE = ("post", "pre")

# A token is a maximal run of Unicode letters or digits: \w minus the underscore.
_TOKEN = re.compile(r"[^\W_]+")


# ---------------------------------------------------------------- tokens and vocabulary

def tokenize(text: str) -> list[str]:
    """Split a text into lowercase word tokens.

    The text is lowercased with ``str.lower`` and every maximal run of Unicode
    letters or digits (the regex ``[^\\W_]+``) is one token; everything else
    (spaces, punctuation, underscores, symbols) separates tokens and is dropped.
    So ``"don't"`` gives ``["don", "t"]`` and ``"R2-D2"`` gives ``["r2", "d2"]``.

    Args:
      text: any string.

    Returns:
      the tokens, in order.

    >>> tokenize("The movie was GOOD -- not great, café_2!")
    ['the', 'movie', 'was', 'good', 'not', 'great', 'café', '2']
    """
    if not isinstance(text, str):
        raise ValueError(f"text: got {type(text).__name__}; allowed: str")
    return _TOKEN.findall(text.lower())


def _token_lists(texts: Iterable[Union[str, Sequence[str]]],
                 field: str = "texts") -> list[list[str]]:
    if isinstance(texts, str):
        raise ValueError(f"{field}: got a single str; allowed: a sequence of texts")
    return [tokenize(t) if isinstance(t, str) else list(t) for t in texts]


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """A fixed token ↔ id map; id 0 is ``<pad>`` and id 1 is ``<unk>``.

    ``tokens[i]`` is the token with id ``i``. Encoding maps any token not in the
    vocabulary to ``<unk>`` (id 1); ``<pad>`` (id 0) never comes out of
    :meth:`encode` and is kept for :func:`pad_sequences`.

    Attributes:
      tokens: all entries in id order, starting ``("<pad>", "<unk>", ...)``; unique.

    >>> vocab = Vocabulary.build(["a cat", "a dog", "a cat"])
    >>> vocab.tokens
    ('<pad>', '<unk>', 'a', 'cat', 'dog')
    >>> vocab.encode("A bird, a cat"), vocab.decode([2, 4])
    ([2, 1, 2, 3], ['a', 'dog'])
    """

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        tokens = self.tokens
        if not isinstance(tokens, tuple) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"tokens: got {tokens!r}; allowed: a tuple of str")
        if tokens[:2] != (PAD, UNK):
            raise ValueError(f"tokens: got {tokens[:2]!r} first; allowed: ('{PAD}', '{UNK}') first")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, c in collections.Counter(tokens).items() if c > 1)
            raise ValueError(f"tokens: got {dup!r} twice; allowed: unique tokens")
        # A derived lookup table, fixed with the tuple (the instance stays immutable).
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(tokens)})

    @classmethod
    def build(cls, texts: Iterable[Union[str, Sequence[str]]], *, min_count: int = 1,
              max_size: Optional[int] = None, specials: Sequence[str] = ()) -> "Vocabulary":
        """Count tokens over ``texts`` and keep the frequent ones.

        Order: ``<pad>``, ``<unk>``, then ``specials``, then the tokens seen at
        least ``min_count`` times sorted by count (most frequent first, ties in
        alphabetical order), cut so that the vocabulary holds at most
        ``max_size`` entries in all (specials included).

        Args:
          texts: strings (tokenized with :func:`tokenize`) or lists of tokens.
          min_count: smallest count a token needs to be kept (>= 1).
          max_size: most entries in all, ``None`` for no limit (>= 2 + len(specials)).
          specials: extra reserved tokens (e.g. ``"<eos>"``), given ids 2, 3, ...

        Returns:
          the :class:`Vocabulary`.

        >>> Vocabulary.build(["b a b c", "b a"], min_count=2, specials=["<eos>"]).tokens
        ('<pad>', '<unk>', '<eos>', 'b', 'a')
        >>> len(Vocabulary.build(["b a b c", "b a"], max_size=3))
        3
        """
        if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) \
                or min_count < 1:
            raise ValueError(f"min_count: got {min_count!r}; allowed: an integer >= 1")
        reserved = (PAD, UNK, *specials)
        if max_size is not None and (isinstance(max_size, bool)
                                     or not isinstance(max_size, (int, np.integer))
                                     or max_size < len(reserved)):
            raise ValueError(f"max_size: got {max_size!r}; allowed: None or an integer >= "
                             f"{len(reserved)} (the special tokens)")
        counts = collections.Counter(t for tokens in _token_lists(texts) for t in tokens)
        kept = sorted((t for t, c in counts.items() if c >= min_count and t not in reserved),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max_size - len(reserved)]
        return cls(tokens=(*reserved, *kept))

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        """The id of ``token``, or 1 (``<unk>``) when it is not in the vocabulary.

        >>> Vocabulary(("<pad>", "<unk>", "hi")).id("hi"), Vocabulary(("<pad>", "<unk>")).id("x")
        (2, 1)
        """
        return self._ids.get(token, UNK_ID)  # type: ignore[attr-defined]

    def encode(self, text: Union[str, Sequence[str]]) -> list[int]:
        """Token ids of a text (tokenized first) or of a list of tokens.

        Args:
          text: a string, or a sequence of tokens (used as given, not re-tokenized).

        Returns:
          one id per token; unknown tokens give 1.

        >>> Vocabulary(("<pad>", "<unk>", "hi")).encode(["hi", "<pad>", "yo"])
        [2, 0, 1]
        """
        tokens = tokenize(text) if isinstance(text, str) else text
        return [self.id(t) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of a sequence of ids (padding included; drop id 0 yourself if needed).

        Args:
          ids: integers in ``0 .. len(self) - 1`` (NumPy integers and integral floats too).

        Returns:
          the tokens.

        >>> Vocabulary(("<pad>", "<unk>", "hi")).decode(np.array([2.0, 0.0]))
        ['hi', '<pad>']
        """
        out = []
        for value in ids:
            i = int(value)
            if i != value or not 0 <= i < len(self.tokens):
                raise ValueError(f"ids: got {value!r}; allowed: integers 0 .. "
                                 f"{len(self.tokens) - 1}")
            out.append(self.tokens[i])
        return out


# ---------------------------------------------------------------- bag of words and TF-IDF

def bag_of_words(texts: Iterable[Union[str, Sequence[str]]], vocab: Vocabulary) -> np.ndarray:
    """Token counts: ``X[i, j]`` = how many tokens of text ``i`` encode to id ``j``.

    Column 0 (``<pad>``) is always 0; column 1 (``<unk>``) counts the tokens not
    in the vocabulary. Word order is lost: "good, not bad" and "bad, not good"
    get the same row.

    Args:
      texts: n strings (tokenized with :func:`tokenize`) or n lists of tokens.
      vocab: the :class:`Vocabulary` giving the columns.

    Returns:
      float32 (n, len(vocab)) counts (exact up to 2^24), ready as model inputs.

    >>> vocab = Vocabulary(("<pad>", "<unk>", "good", "not", "bad"))
    >>> bag_of_words(["good, not bad", "bad bad movie"], vocab).tolist()
    [[0.0, 0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0, 2.0]]
    """
    rows = _token_lists(texts)
    counts = np.zeros((len(rows), len(vocab)), np.float64)
    for i, tokens in enumerate(rows):
        np.add.at(counts[i], np.asarray(vocab.encode(tokens), np.int64), 1.0)
    return counts.astype(np.float32)


def idf_weights(counts: np.ndarray) -> np.ndarray:
    """Smoothed inverse document frequency of each column of a count matrix.

        idf_j = ln((1 + N) / (1 + df_j)) + 1

    with N the number of rows (documents) and df_j the number of rows where
    column j is positive. The "+1" inside acts as one extra document holding
    every term (no division by zero); the "+1" outside keeps terms found in
    every document (idf would be 0) in the representation. This is scikit-learn's
    ``TfidfVectorizer(smooth_idf=True)``.

    Args:
      counts: (N, V) non-negative counts, e.g. from :func:`bag_of_words`.

    Returns:
      float64 (V,) weights, each >= 1.

    >>> idf_weights(np.array([[1, 0], [2, 1]])).round(4).tolist()  # ln(3/3)+1, ln(3/2)+1
    [1.0, 1.4055]
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or (counts.size and counts.min() < 0):
        raise ValueError(f"counts: got shape {counts.shape!r}; allowed: (N, V) non-negative counts")
    n = counts.shape[0]
    df = np.count_nonzero(counts > 0, axis=0)
    return np.log((1.0 + n) / (1.0 + df)) + 1.0


def tf_idf(texts: Iterable[Union[str, Sequence[str]]], vocab: Vocabulary, *,
           idf: Optional[np.ndarray] = None) -> np.ndarray:
    """TF-IDF features: counts times idf, each row scaled to unit Euclidean length.

        w_ij = tf_ij · idf_j,    X[i, j] = w_ij / sqrt(Σ_k w_ik²)    (rows of zeros stay 0)

    with tf_ij the raw count of term j in text i (:func:`bag_of_words`) and idf
    from :func:`idf_weights`. A word's weight grows with its count in the text
    and shrinks with the share of texts that contain it. With ``idf=None`` the
    idf is computed from ``texts`` themselves; to featurize a test set, pass the
    idf of the training set. Words outside the vocabulary are dropped (the
    ``<unk>`` column is set to 0 before normalizing; ``<pad>`` is always 0), so a
    vector does not depend on how many words the vocabulary lacks. This equals
    scikit-learn's ``TfidfVectorizer`` with its defaults (``norm="l2",
    use_idf=True, smooth_idf=True, sublinear_tf=False``) given the same tokens and
    vocabulary.

    Args:
      texts: n strings or n lists of tokens.
      vocab: the :class:`Vocabulary` giving the columns.
      idf: (len(vocab),) weights to use, or ``None`` to compute them from ``texts``.

    Returns:
      float32 (n, len(vocab)).

    >>> vocab = Vocabulary(("<pad>", "<unk>", "a", "b"))
    >>> # idf(a) = ln(3/3) + 1 = 1, idf(b) = ln(3/2) + 1
    >>> tf_idf(["a b", "a"], vocab).astype(float).round(4).tolist()
    [[0.0, 0.0, 0.5797, 0.8148], [0.0, 0.0, 1.0, 0.0]]
    """
    counts = bag_of_words(texts, vocab).astype(np.float64)
    if idf is None:
        idf = idf_weights(counts)
    idf = np.asarray(idf, np.float64)
    if idf.shape != (len(vocab),):
        raise ValueError(f"idf: got shape {idf.shape!r}; allowed: ({len(vocab)},), one weight "
                         "per token")
    weights = counts * idf
    weights[:, UNK_ID] = 0.0
    norms = np.sqrt(np.sum(weights**2, axis=1, keepdims=True))
    return np.divide(weights, norms, out=np.zeros_like(weights), where=norms > 0).astype(np.float32)


# ---------------------------------------------------------------- sequences

def pad_sequences(sequences: Sequence[Sequence[int]], max_len: Optional[int] = None, *,
                  pad_id: int = PAD_ID, truncate: str = "post") -> np.ndarray:
    """Put id lists of different lengths into one (n, max_len) array.

    Shorter sequences are filled with ``pad_id`` at the end (right padding, so
    position t of every example is its t-th token); longer ones are cut:
    ``truncate="post"`` keeps the first ``max_len`` ids, ``"pre"`` the last ones.

    Args:
      sequences: n sequences of integer ids.
      max_len: columns of the result (>= 1), ``None`` for the longest sequence.
      pad_id: the filler id (``<pad>`` = 0).
      truncate: ``"post"`` or ``"pre"``.

    Returns:
      int32 (n, max_len).

    >>> pad_sequences([[5, 6, 7], [8]], 2).tolist()
    [[5, 6], [8, 0]]
    >>> pad_sequences([[5, 6, 7], [8]], 2, truncate="pre").tolist()
    [[6, 7], [8, 0]]
    """
    if truncate not in TRUNCATE:
        raise ValueError(f"truncate: got {truncate!r}; allowed: {', '.join(TRUNCATE)}")
    sequences = [list(s) for s in sequences]
    if max_len is None:
        max_len = max((len(s) for s in sequences), default=1) or 1
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"max_len: got {max_len!r}; allowed: None or an integer >= 1")
    out = np.full((len(sequences), max_len), pad_id, np.int32)
    for i, seq in enumerate(sequences):
        kept = seq[:max_len] if truncate == "post" else seq[-max_len:]
        out[i, : len(kept)] = kept
    return out


def lm_windows(token_ids: Sequence[int], seq_len: int, *,
               stride: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut a token stream into language-modelling examples: y is x shifted by one.

    For a stream s_0 .. s_{L−1}, window k starts at k·stride:

        x[k, t] = s[k·stride + t],   y[k, t] = s[k·stride + t + 1],   t = 0 .. seq_len − 1

    for k = 0 .. ⌊(L − 1 − seq_len) / stride⌋, i.e. every window whose last
    target is still in the stream; the model learns p(s_{t+1} | s_0..s_t).

    Args:
      token_ids: the stream (any integer sequence).
      seq_len: tokens per window (>= 1); the stream needs at least seq_len + 1.
      stride: start-to-start distance (>= 1); ``None`` means ``seq_len``
        (non-overlapping inputs).

    Returns:
      ``(x, y)``, both int32 (num_windows, seq_len).

    >>> x, y = lm_windows([10, 11, 12, 13, 14, 15, 16], 3)
    >>> x.tolist(), y.tolist()
    ([[10, 11, 12], [13, 14, 15]], [[11, 12, 13], [14, 15, 16]])
    >>> lm_windows([10, 11, 12, 13, 14], 3, stride=1)[0].tolist()
    [[10, 11, 12], [11, 12, 13]]
    """
    for field, value in (("seq_len", seq_len), ("stride", seq_len if stride is None else stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{field}: got {value!r}; allowed: an integer >= 1")
    stride = seq_len if stride is None else stride
    stream = np.asarray(token_ids, np.int64)
    if stream.ndim != 1 or len(stream) < seq_len + 1:
        raise ValueError(f"token_ids: got {len(stream)} tokens; allowed: at least seq_len + 1 = "
                         f"{seq_len + 1}")
    starts = np.arange(0, len(stream) - seq_len, stride)
    index = starts[:, None] + np.arange(seq_len)[None, :]
    return stream[index].astype(np.int32), stream[index + 1].astype(np.int32)


# ---------------------------------------------------------------- corpus 1: a small grammar

#: Word classes of the language-modelling grammar (see :func:`grammar_sentences`).
GRAMMAR_WORDS: dict[str, tuple[str, ...]] = {
    "det_sg": ("a", "the"),
    "det_pl": ("some", "the"),
    "adj": ("big", "small", "red", "old"),
    "noun_sg": ("cat", "dog", "bird", "child", "farmer"),
    "noun_pl": ("cats", "dogs", "birds", "children", "farmers"),
    "vt_sg": ("sees", "likes", "chases", "finds"),
    "vt_pl": ("see", "like", "chase", "find"),
    "vi_sg": ("sleeps", "runs", "sings"),
    "vi_pl": ("sleep", "run", "sing"),
    "prep": ("near", "with", "behind"),
}
#: Probability that a noun phrase has an adjective.
GRAMMAR_ADJ_PROB = 0.5
#: Probabilities of the verb phrases: transitive, intransitive, intransitive + prepositional phrase.
GRAMMAR_VP_PROBS = (0.5, 0.25, 0.25)

#: Vocabulary of ``grammar_lm``: <pad>, <unk>, <eos>, then every grammar word alphabetically.
GRAMMAR_VOCAB = Vocabulary(
    (PAD, UNK, EOS, *sorted({w for words in GRAMMAR_WORDS.values() for w in words})))


def _check_count(field: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{field}: got {value!r}; allowed: an integer >= {low}")
    return int(value)


def _noun_phrase(rng: np.random.Generator, number: str) -> list[str]:
    words = [str(rng.choice(GRAMMAR_WORDS[f"det_{number}"]))]
    if rng.random() < GRAMMAR_ADJ_PROB:
        words.append(str(rng.choice(GRAMMAR_WORDS["adj"])))
    words.append(str(rng.choice(GRAMMAR_WORDS[f"noun_{number}"])))
    return words


def grammar_sentences(n: int, *, seed: int = 0) -> list[str]:
    """Sentences of a tiny English-like probabilistic grammar with number agreement.

    Each sentence, drawn independently with ``np.random.default_rng(seed)``:

    1. the subject's number is singular or plural with probability ½ each;
    2. subject NP = determiner of that number (sg: a, the; pl: some, the), an
       adjective with probability ½ (big, small, red, old), a noun of that
       number (cat dog bird child farmer / cats dogs birds children farmers);
    3. verb phrase, the verb agreeing with the subject's number:
       with probability ½ a transitive verb (sees likes chases finds / see like
       chase find) + an object NP; with ¼ an intransitive verb (sleeps runs
       sings / sleep run sing); with ¼ an intransitive verb + a preposition
       (near with behind) + an NP. Object NPs draw their own number.

    Every choice inside a word class is uniform. The agreement "the old cat
    sleeps" / "the old cats sleep" is a dependency over up to two words that a
    bigram model cannot see, and which words may follow which is strongly
    constrained, so a language model can get far below the unigram entropy.

    Args:
      n: number of sentences (>= 1).
      seed: seed of the draw.

    Returns:
      ``n`` strings of space-separated lowercase words (no punctuation).

    >>> grammar_sentences(2, seed=0)
    ['the small cats sleep with the children', 'the children sleep with some big farmers']
    """
    rng = np.random.default_rng(_check_count("seed", seed, 0))
    out = []
    for _ in range(_check_count("n", n, 1)):
        number = "sg" if rng.random() < 0.5 else "pl"
        words = _noun_phrase(rng, number)
        kind = rng.choice(3, p=GRAMMAR_VP_PROBS)
        if kind == 0:
            words.append(str(rng.choice(GRAMMAR_WORDS[f"vt_{number}"])))
            words += _noun_phrase(rng, "sg" if rng.random() < 0.5 else "pl")
        else:
            words.append(str(rng.choice(GRAMMAR_WORDS[f"vi_{number}"])))
            if kind == 2:
                words.append(str(rng.choice(GRAMMAR_WORDS["prep"])))
                words += _noun_phrase(rng, "sg" if rng.random() < 0.5 else "pl")
        out.append(" ".join(words))
    return out


def grammar_stream(sentences: Sequence[str]) -> np.ndarray:
    """Encode sentences with :data:`GRAMMAR_VOCAB`, each followed by ``<eos>`` (id 2).

    Args:
      sentences: strings, e.g. from :func:`grammar_sentences`.

    Returns:
      int32 (total tokens,) stream.

    >>> grammar_stream(["a cat sleeps", "the dogs run"]).tolist()
    [3, 8, 32, 2, 35, 15, 25, 2]
    """
    eos = GRAMMAR_VOCAB.id(EOS)
    ids = [i for sentence in sentences for i in (*GRAMMAR_VOCAB.encode(sentence), eos)]
    return np.asarray(ids, np.int32)


def grammar_lm(*, n_sentences: int = 2000, seq_len: int = 16, test_fraction: float = 0.2,
               data_seed: int = 0) -> Dataset:
    """Next-word prediction on :func:`grammar_sentences` (a language-modelling dataset).

    The first ``round((1 − test_fraction)·n_sentences)`` sentences make the
    training stream, the rest the test stream (:func:`grammar_stream`: ids of
    :data:`GRAMMAR_VOCAB`, ``<eos>`` after each sentence); each stream is cut by
    :func:`lm_windows` into non-overlapping windows of ``seq_len`` tokens.
    ``x`` holds the window's ids (as float32, the :class:`Dataset` convention),
    ``y`` the next ids (int32, shape (n, seq_len)); ``num_classes`` is the
    vocabulary size and ``class_names`` the tokens, so
    ``Vocabulary(ds.class_names).decode(ids)`` reads a window back.

    Args:
      n_sentences: sentences in all (>= 10).
      seq_len: tokens per window (>= 1).
      test_fraction: share of sentences in the test stream, 0 < f < 1.
      data_seed: seed of :func:`grammar_sentences`.

    Returns:
      a multiclass :class:`Dataset` with sequence targets.

    >>> ds = grammar_lm(n_sentences=100, seq_len=8)
    >>> ds.x_train.shape, ds.y_train.shape, ds.num_classes
    ((62, 8), (62, 8), 37)
    >>> " ".join(GRAMMAR_VOCAB.decode(ds.x_train[0]))
    'the small cats sleep with the children <eos>'
    >>> " ".join(GRAMMAR_VOCAB.decode(ds.y_train[0]))
    'small cats sleep with the children <eos> the'
    """
    n = _check_count("n_sentences", n_sentences, 10)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: got {test_fraction!r}; allowed: 0 < test_fraction < 1")
    sentences = grammar_sentences(n, seed=data_seed)
    n_train = min(max(round((1 - test_fraction) * n), 1), n - 1)
    x_train, y_train = lm_windows(grammar_stream(sentences[:n_train]), seq_len)
    x_test, y_test = lm_windows(grammar_stream(sentences[n_train:]), seq_len)
    return _text_dataset("grammar_lm", "multiclass", x_train, y_train, x_test, y_test,
                         len(GRAMMAR_VOCAB), GRAMMAR_VOCAB.tokens)


def _text_dataset(name: str, task: str, x_train: np.ndarray, y_train: np.ndarray,
                  x_test: np.ndarray, y_test: np.ndarray, num_classes: int,
                  class_names: tuple[str, ...]) -> Dataset:
    return Dataset(
        x_train=x_train.astype(np.float32), y_train=y_train.astype(np.int32),
        x_val=np.zeros((0, *x_train.shape[1:]), np.float32),
        y_val=np.zeros((0, *y_train.shape[1:]), np.int32),
        x_test=x_test.astype(np.float32), y_test=y_test.astype(np.int32),
        task=task, num_classes=num_classes, class_names=class_names, name=name,
    )


# ---------------------------------------------------------------- corpus 2: order-dependent reviews

#: Word classes of the synthetic reviews (see :func:`review_sentences`).
REVIEW_WORDS: dict[str, tuple[str, ...]] = {
    "noun": ("movie", "film", "plot", "story", "acting", "ending"),
    "positive": ("good", "great", "fun", "clever", "moving"),
    "negative": ("bad", "boring", "dull", "silly", "slow"),
}
#: Probabilities of "but" + a second clause, of "not" in a clause, of "very" in a clause.
REVIEW_BUT_PROB, REVIEW_NOT_PROB, REVIEW_VERY_PROB = 0.5, 0.3, 0.3
#: Vocabulary of ``reviews``: <pad>, <unk>, then every review word alphabetically.
REVIEW_VOCAB = Vocabulary((PAD, UNK, *sorted(
    {"the", "was", "but", "not", "very", *(w for words in REVIEW_WORDS.values() for w in words)})))


def _clause(rng: np.random.Generator, positive: bool) -> list[str]:
    negated = rng.random() < REVIEW_NOT_PROB
    very = rng.random() < REVIEW_VERY_PROB
    # "not" flips the adjective's polarity: a positive clause is "good" or "not bad".
    adjectives = REVIEW_WORDS["positive" if positive != negated else "negative"]
    return ["not"] * negated + ["very"] * very + [str(rng.choice(adjectives))]


def review_sentences(n: int, *, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Synthetic one-line reviews whose label depends on word order.

    Each review, drawn independently with ``np.random.default_rng(seed)``::

        the NOUN was CLAUSE₁                    (probability ½)
        the NOUN was CLAUSE₁ but CLAUSE₂        (probability ½)
        CLAUSE = [not] [very] ADJ               ("not" w.p. 0.3, "very" w.p. 0.3)

    NOUN is uniform over movie film plot story acting ending. CLAUSE₁ is
    positive or negative with probability ½; CLAUSE₂ has the opposite polarity
    (that is what "but" means). A clause is positive when its adjective is
    positive (good great fun clever moving) and not negated, or negative (bad
    boring dull silly slow) and negated; adjectives are uniform within their
    list. The label is the polarity of the LAST clause: 1 positive, 0 negative.

    "the movie was good but boring" (0) and "the movie was boring but good" (1)
    have the same bag of words: a bag-of-words model cannot get those right,
    a model that sees order (positions + attention, or a recurrent net) can.

    Args:
      n: number of reviews (>= 1).
      seed: seed of the draw.

    Returns:
      ``(texts, labels)``: n strings and int32 (n,) labels.

    >>> texts, labels = review_sentences(6, seed=0)
    >>> for text, label in zip(texts, labels.tolist()):
    ...     print(label, text)
    1 the ending was not very silly
    0 the story was slow
    1 the film was very moving
    1 the ending was very bad but not very bad
    0 the acting was dull
    1 the ending was silly but great
    """
    rng = np.random.default_rng(_check_count("seed", seed, 0))
    texts, labels = [], []
    for _ in range(_check_count("n", n, 1)):
        words = ["the", str(rng.choice(REVIEW_WORDS["noun"])), "was"]
        positive = bool(rng.random() < 0.5)
        words += _clause(rng, positive)
        if rng.random() < REVIEW_BUT_PROB:
            positive = not positive
            words += ["but", *_clause(rng, positive)]
        texts.append(" ".join(words))
        labels.append(int(positive))
    return texts, np.asarray(labels, np.int32)


def reviews(*, n_train: int = 2000, n_test: int = 500, max_len: int = 12,
            data_seed: int = 0) -> Dataset:
    """Binary sentiment of :func:`review_sentences`, as padded token ids.

    ``n_train + n_test`` reviews are drawn in one stream (training rows first),
    encoded with :data:`REVIEW_VOCAB` and right-padded with ``<pad>`` = 0 to
    ``max_len`` columns (:func:`pad_sequences`; reviews have 4 to 10 tokens, so
    the default cuts nothing). ``x`` holds the ids as float32 (the
    :class:`Dataset` convention), ``y`` the labels; class names
    ("negative", "positive").

    Args:
      n_train, n_test: rows of each split (>= 1).
      max_len: columns (>= 1); longer reviews are cut at the end.
      data_seed: seed of :func:`review_sentences`.

    Returns:
      a binary :class:`Dataset`, x (n, max_len).

    >>> ds = reviews(n_train=3, n_test=1)
    >>> ds.x_train[1].astype(int).tolist(), int(ds.y_train[1])
    ([20, 19, 22, 18, 0, 0, 0, 0, 0, 0, 0, 0], 0)
    >>> " ".join(REVIEW_VOCAB.decode(ds.x_train[1][ds.x_train[1] > 0]))
    'the story was slow'
    """
    n_train = _check_count("n_train", n_train, 1)
    n_test = _check_count("n_test", n_test, 1)
    texts, labels = review_sentences(n_train + n_test, seed=data_seed)
    x = pad_sequences([REVIEW_VOCAB.encode(t) for t in texts], _check_count("max_len", max_len, 1))
    return _text_dataset("reviews", "binary", x[:n_train], labels[:n_train], x[n_train:],
                         labels[n_train:], 2, ("negative", "positive"))


def unigram_entropy(token_ids: Sequence[int]) -> float:
    """Entropy of the token frequencies, in nats: H = −Σ_v p_v ln p_v, p_v = count_v / L.

    The cross-entropy of the best model that ignores context (it always predicts
    the frequencies p); a language model must beat it to have learned anything
    about order.

    Args:
      token_ids: a non-empty stream of ids.

    Returns:
      H >= 0 (0 when a single token repeats).

    >>> round(unigram_entropy([1, 1, 2, 2]), 4) == round(math.log(2), 4)
    True
    """
    _, counts = np.unique(np.asarray(token_ids).ravel(), return_counts=True)
    if counts.sum() == 0:
        raise ValueError("token_ids: got 0 tokens; allowed: at least 1")
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


__all__ = [
    "EOS", "GRAMMAR_ADJ_PROB", "GRAMMAR_VOCAB", "GRAMMAR_VP_PROBS", "GRAMMAR_WORDS", "PAD",
    "PAD_ID", "REVIEW_BUT_PROB", "REVIEW_NOT_PROB", "REVIEW_VERY_PROB", "REVIEW_VOCAB",
    "REVIEW_WORDS", "TRUNCATE", "UNK", "UNK_ID", "Vocabulary", "bag_of_words", "grammar_lm",
    "grammar_sentences", "grammar_stream", "idf_weights", "lm_windows", "pad_sequences",
    "review_sentences", "reviews", "tf_idf", "tokenize", "unigram_entropy",
]
