"""The text of each synthetic document: realistic prose, planted junk and edited copies.

Why realistic: heuristic filters and language id must see real words, stop words, punctuation,
paragraphs and scripts, or their tests prove nothing. Why one generator per document, seeded by
``(seed, index)``: a near duplicate regenerates its source's text without holding the corpus in
memory, and any document can be rebuilt alone from the plan.
"""

from __future__ import annotations

import numpy as np

from curator_stages.corpus.plan import KINDS, LANGS, CorpusConfig, Plan
from curator_stages.corpus.vocabulary import (
    BOILERPLATE_LINES,
    LOREM,
    URL_HOSTS,
    ZH_WORDS,
    words,
)

#: Word endings of the token-variant table: what follows a word (punctuation and separator).
_END_MARKS = ("", ",", ".", "?", "!", "...")
_ZH_MARKS = ("", "，", "。", "？", "！", "……")


class _Lexicon:
    """Per-language vocabulary with a Zipf-like cumulative distribution for fast sampling.

    Prose is built without a per-sentence Python loop: every word has precomputed *variants*
    (capitalised or not, followed by a space, a comma, end punctuation, or a paragraph break), so a
    document is one vectorised choice of (word, variant) codes and one ``"".join``.
    """

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.zh = lang == "zh"
        if self.zh:
            vocab = list(ZH_WORDS)
            weights = 1.0 / np.arange(1, len(vocab) + 1) ** 0.8
        else:
            stop, content = words(lang)
            vocab = stop + content
            w_stop = 1.0 / np.arange(1, len(stop) + 1) ** 0.9
            w_content = 1.0 / np.arange(1, len(content) + 1) ** 0.7
            weights = np.concatenate([w_stop / w_stop.sum() * 0.45,
                                      w_content / w_content.sum() * 0.55])
        self.vocab = vocab
        self.cdf = np.cumsum(weights / weights.sum())
        self.cdf[-1] = 1.0
        marks = _ZH_MARKS if self.zh else _END_MARKS
        space = "" if self.zh else " "
        # variant = cap * N_END + end, end in: mark+space (0..5), mark+"\n\n" (6..11), mark+"\n" (12..17)
        seps = (space, "\n\n", "\n")
        self.n_end = len(marks) * len(seps)
        table: list[str] = []
        for word in vocab:
            for cap in (False, True):
                w = word[:1].upper() + word[1:] if cap and not self.zh else word
                for sep in seps:
                    for mark in marks:
                        table.append(w + mark + sep)
        self.n_variants = 2 * self.n_end
        self.table = table

    def sample(self, rng: np.random.Generator, n: int) -> list[str]:
        vocab = self.vocab
        return [vocab[k] for k in np.searchsorted(self.cdf, rng.random(n)).tolist()]

    def prose(self, rng: np.random.Generator, n_words: int) -> str:
        n = max(int(n_words), 1)
        u = rng.random(2 * n)
        idx = np.searchsorted(self.cdf, u[:n])
        lens = rng.integers(5, 24, size=n // 5 + 2)
        ends = np.cumsum(lens) - 1
        ends = ends[ends < n - 1]
        ends = np.append(ends, n - 1)
        n_sent = len(ends)
        su = rng.random(2 * n_sent + 1)
        # end punctuation per sentence: . (86%) ? (8%) ! (3%) ... (3%)
        mark = 2 + np.searchsorted(np.array([0.86, 0.94, 0.97]), su[:n_sent], side="right")
        # paragraph break after about one sentence in four; "\n" instead of "\n\n" in a quarter of docs
        brk = su[n_sent:2 * n_sent] < 0.25
        brk[-1] = False
        sep_kind = 2 if su[-1] < 0.25 else 1
        end = np.where(u[n:] < 0.06, 1, 0)  # commas
        end[ends] = mark + len(_END_MARKS) * np.where(brk, sep_kind, 0)
        cap = np.zeros(n, dtype=np.int64)
        cap[0] = 1
        cap[ends[:-1] + 1] = 1
        codes = idx * self.n_variants + cap * self.n_end + end
        table = self.table
        return "".join([table[c] for c in codes.tolist()]).rstrip()


_LEXICONS: dict[str, _Lexicon] = {}


def lexicon(lang: str) -> _Lexicon:
    if lang not in _LEXICONS:
        _LEXICONS[lang] = _Lexicon(lang)
    return _LEXICONS[lang]


def _doc_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([seed, index]))


def prose(rng: np.random.Generator, lang: str, n_words: int) -> str:
    """Sentences with capitals, commas and end punctuation, grouped into paragraphs."""
    return lexicon(lang).prose(rng, n_words)


def junk(rng: np.random.Generator, kind: str, lang: str, n_words: int) -> str:
    """Text that a heuristic quality filter should remove, by kind."""
    if kind == "junk_boilerplate":
        lines = [BOILERPLATE_LINES[i] for i in rng.integers(0, len(BOILERPLATE_LINES), rng.integers(6, 20))]
        return "\n".join(lines)
    if kind == "junk_lorem":
        toks = [LOREM[i] for i in rng.integers(0, len(LOREM), max(n_words, 40)).tolist()]
        toks[0] = toks[0].capitalize()
        return " ".join(toks) + "."
    if kind == "junk_symbols":
        symbols = ("#####", "$$$", "%%%", "&&&&", "***", "@@@", "|||", ">>>", "~~~~", "^^^", "{}", "[]", "<<<>>>", "★★★", "→→→", "■■■")
        toks = [symbols[i] for i in rng.integers(0, len(symbols), max(n_words, 30)).tolist()]
        toks[:: 7] = lexicon(lang if lang != "zh" else "en").sample(rng, len(toks[:: 7]))
        return " ".join(toks)
    if kind == "junk_numbers":
        rows = []
        for _ in range(int(rng.integers(8, 40))):
            rows.append(" ".join(str(v) for v in rng.integers(0, 100000, rng.integers(4, 12)).tolist()))
        return "\n".join(rows)
    if kind == "junk_bullets":
        lex = lexicon(lang)
        bullet = ("• ", "- ", "* ", "· ")[int(rng.integers(0, 4))]
        sep = "" if lang == "zh" else " "
        return "\n".join(bullet + sep.join(lex.sample(rng, int(rng.integers(2, 6))))
                         for _ in range(int(rng.integers(8, 30))))
    if kind == "junk_short":
        sep = "" if lang == "zh" else " "
        return sep.join(lexicon(lang).sample(rng, int(rng.integers(1, 5))))
    if kind == "junk_repeated_lines":
        lines = [prose(rng, lang, int(rng.integers(6, 14))) for _ in range(2)]
        return "\n".join(lines[int(i)] for i in rng.integers(0, 2, rng.integers(12, 40)))
    if kind == "junk_urls":
        lex = lexicon("en")
        return "\n".join(
            f"https://{URL_HOSTS[int(rng.integers(0, len(URL_HOSTS)))]}/"
            + "/".join(lex.sample(rng, int(rng.integers(1, 4)))) + f"?id={int(rng.integers(0, 99999))}"
            for _ in range(int(rng.integers(10, 40))))
    raise ValueError(f"unknown junk kind {kind!r}")


def near_copy(rng: np.random.Generator, text: str, lang: str, edit_rate: float) -> tuple[str, float]:
    """``text`` with about ``edit_rate`` of its words edited; returns (copy, realised rate)."""
    lex = lexicon(lang)
    toks = list(text) if lang == "zh" else text.split(" ")
    n = len(toks)
    edit = rng.random(n) < edit_rate
    if not edit.any():
        edit[int(rng.integers(0, n))] = True
    ops = rng.integers(0, 4, n)  # 0,1 substitute; 2 delete; 3 insert after
    repl = lex.sample(rng, n)
    out: list[str] = []
    for i, tok in enumerate(toks):
        if not edit[i]:
            out.append(tok)
        elif ops[i] <= 1 and repl[i] != tok:
            out.append(repl[i])
        elif ops[i] != 2:  # insert (also a substitution that drew the same word)
            out.append(tok)
            out.append(repl[i])
    sep = "" if lang == "zh" else " "
    return sep.join(out), float(edit.sum()) / n


def document_text(cfg: CorpusConfig, plan: Plan, i: int) -> tuple[str, float | None]:
    """The text of document ``i`` (and the realised edit rate for near duplicates)."""
    kind = KINDS[plan.kind[i]]
    lang = LANGS[plan.lang[i]]
    if kind in ("exact_dup", "near_dup"):
        src = int(plan.source[i])
        base = prose(_doc_rng(cfg.seed, src), lang, int(plan.n_words[src]))
        if kind == "exact_dup":
            return base, 0.0
        return near_copy(_doc_rng(cfg.seed, i), base, lang, cfg.near_dup_edit_rate)
    rng = _doc_rng(cfg.seed, i)
    if kind == "clean":
        return prose(rng, lang, int(plan.n_words[i])), None
    return junk(rng, kind, lang, int(plan.n_words[i])), None


def doc_id(i: int) -> str:
    return f"doc-{i:09d}"
