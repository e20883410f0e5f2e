"""Vectorised shingling and MinHash signatures with numpy.

Shingles: the text is normalised (NFC, lowercase, whitespace collapsed), split into tokens
(code points for character n-grams, whitespace words for word n-grams), and every window of
``ngram_size`` tokens is hashed with a rolling polynomial over uint64 (wrapping arithmetic)
followed by the splitmix64 finaliser, all as numpy array operations over a whole batch of
documents at once. A text shorter than one n-gram is one shingle (itself); an empty text has
none and gets no signature (it is never a near duplicate; exact dedup handles empty texts).

Permutations: ``h_k(x) = ((a_k * x + b_k) mod 2^64) >> 32`` over 32-bit shingle hashes x,
with random odd 64-bit ``a_k`` and random ``b_k`` - multiply-add-shift, a 2-universal family
for 32-bit keys (Dietzfelbinger 1996) that needs no 128-bit products. The signature is the
per-document minimum of each ``h_k`` (uint32). Memory is bounded by processing documents in
chunks of at most ``MAX_CELLS`` (shingles x permutations) cells, a document longer than that in
slices of it.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import xxhash

MAX_CELLS = 1_000_000  # 8 MB of uint64 temporaries per chunk, small enough to stay in cache
_POLY = np.uint64(0x100000001B3)
_EMPTY = np.uint32(0xFFFFFFFF)


def normalize_for_shingles(text: str | None) -> str:
    return " ".join(unicodedata.normalize("NFC", text or "").lower().split())


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, in place on a fresh copy (few temporaries)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _tokens(texts: list[str], word_ngrams: bool) -> tuple[np.ndarray, np.ndarray]:
    """(token ids as uint64, per-document token counts) for normalised texts."""
    if word_ngrams:
        h = xxhash.xxh3_64_intdigest
        counts = np.empty(len(texts), dtype=np.int64)
        toks: list[int] = []
        for i, t in enumerate(texts):
            words = t.split(" ") if t else []
            counts[i] = len(words)
            toks.extend(h(w.encode("utf-8")) for w in words)
        return np.array(toks, dtype=np.uint64), counts
    blob = "".join(texts).encode("utf-32-le")
    counts = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    return np.frombuffer(blob, dtype="<u4").astype(np.uint64), counts


def shingle_hashes(texts: list[str], ngram_size: int, word_ngrams: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """32-bit shingle hashes of normalised texts, grouped by document.

    Returns (hashes as uint64 holding 32-bit values, per-document shingle counts). Duplicate
    shingles within a document are kept (MinHash is indifferent to them).
    """
    with np.errstate(over="ignore"):
        toks, counts = _tokens(texts, word_ngrams)
        n = ngram_size
        ends = np.cumsum(counts)
        starts = ends - counts
        total = int(toks.size)
        n_windows = max(total - n + 1, 0)
        roll = np.zeros(n_windows, dtype=np.uint64)
        for j in range(n):
            roll *= _POLY
            roll += toks[j: j + n_windows]
            roll += np.uint64(1)
        # A window is valid when it starts and ends inside one document.
        full_counts = np.maximum(counts - n + 1, 0)
        doc_of_window = np.repeat(np.arange(len(texts)), full_counts)
        offsets = np.arange(int(full_counts.sum())) - np.repeat(np.cumsum(full_counts) - full_counts, full_counts)
        window_pos = np.repeat(starts, full_counts) + offsets
        hashes = roll[window_pos] if window_pos.size else np.zeros(0, dtype=np.uint64)
        shingle_counts = full_counts.copy()
        short = np.nonzero((counts > 0) & (counts < n))[0]
        if short.size:
            extra = []
            for d in short:
                h = np.uint64(0)
                for t in toks[starts[d]: ends[d]]:
                    h = h * _POLY + t + np.uint64(1)
                extra.append(h)
            shingle_counts[short] = 1
            # Insert the short documents' single shingle at their place (documents stay grouped).
            doc_of_window = np.concatenate([doc_of_window, short])
            hashes = np.concatenate([hashes, np.array(extra, dtype=np.uint64)])
            order = np.argsort(doc_of_window, kind="stable")
            hashes = hashes[order]
        hashes = _splitmix64(hashes) >> np.uint64(32)
    return hashes, shingle_counts


def _long_document_signature(x: np.ndarray, a_col: np.ndarray, b_col: np.ndarray,
                             buf: np.ndarray) -> np.ndarray:
    """The signature of one document with more shingles than ``buf`` holds: the running
    minimum over slices, so a megabyte-long page costs no more memory than a short one."""
    low = np.full(a_col.shape[0], np.iinfo(np.uint64).max, dtype=np.uint64)
    for s in range(0, x.size, buf.shape[1]):
        np.minimum(low, _permuted(x[s: s + buf.shape[1]], a_col, b_col, buf).min(axis=1), out=low)
    return (low >> np.uint64(32)).astype(np.uint32)


def _permuted(x: np.ndarray, a_col: np.ndarray, b_col: np.ndarray, buf: np.ndarray
              ) -> np.ndarray:
    """``(a_k * x + b_k) mod 2^64`` for every permutation k (rows), in the first ``x.size``
    columns of ``buf``."""
    view = buf[:, : x.size]
    np.multiply(a_col, x[None, :], out=view)
    np.add(view, b_col, out=view)
    return view


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) coefficients of ``num_perm`` multiply-add-shift hash functions."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def minhash_signatures(hashes: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray
                       ) -> np.ndarray:
    """(documents x num_perm) uint32 signatures; documents without shingles get all 0xFFFFFFFF.

    Works on a (num_perm x shingles) layout so each permutation is a contiguous row and the
    per-document minimum is one ``minimum.reduceat`` along it. The ``>> 32`` is monotone, so it is
    applied after the minimum, on the small result.
    """
    n_docs, k = counts.size, a.size
    sig = np.full((n_docs, k), _EMPTY, dtype=np.uint32)
    ends = np.cumsum(counts)
    starts = ends - counts
    docs = np.nonzero(counts > 0)[0]
    budget = max(MAX_CELLS // k, 1)
    buf = np.empty((k, min(int(counts.sum()), budget)), dtype=np.uint64)
    a_col, b_col = a[:, None], b[:, None]
    i = 0
    with np.errstate(over="ignore"):
        while i < docs.size:
            # Whole documents per chunk, at most ``budget`` shingles.
            lo = starts[docs[i]]
            j = int(np.searchsorted(ends[docs], lo + budget, side="right"))
            if j <= i:  # one document longer than the budget: its slices, minimum kept
                doc = docs[i]
                sig[doc] = _long_document_signature(hashes[lo:ends[doc]], a_col, b_col, buf)
                i += 1
                continue
            chunk = docs[i:j]
            hi = ends[chunk[-1]]
            view = _permuted(hashes[lo:hi], a_col, b_col, buf)
            mins = np.minimum.reduceat(view, starts[chunk] - lo, axis=1)
            sig[chunk] = (mins.T >> np.uint64(32)).astype(np.uint32)
            i = j
    return sig
