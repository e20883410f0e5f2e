"""Language id on a bounded sample of the text against the full text: agreement and speed.

Builds a multilingual corpus with known languages (the corpus generator's prose in each of its
languages, at lengths from 200 characters to several kB, a third of them "mixed": a passage of
another language at a random place, or boilerplate lines around), labels it once with the full text and
once per candidate ``max_chars``, all in this one process, interleaved per repeat, and prints per
language: agreement with the full-text labels (documents over 200 characters) and documents/s.

    python -m benchmarks.bench_language --docs-per-language 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from curator_stages.corpus.generator import LANGS, prose
from curator_stages.corpus.vocabulary import BOILERPLATE_LINES
from curator_stages.text.language import LanguageIdentifier


def multilingual_corpus(docs_per_language: int, seed: int = 0) -> list[tuple[str, str]]:
    """[(language, text)]: every text is mostly ``language``; about a third mix in another."""
    out: list[tuple[str, str]] = []
    for li, lang in enumerate(LANGS):
        rng = np.random.Generator(np.random.PCG64([seed, li]))
        for i in range(docs_per_language):
            n_words = int(rng.integers(30, 500))  # ~0.2-3 kB, mean ~1.6 kB
            text = prose(rng, lang, n_words)
            kind = i % 3
            if kind == 1:  # a foreign passage of 5-25% of the words
                other = LANGS[(li + 1 + int(rng.integers(0, len(LANGS) - 1))) % len(LANGS)]
                insert = prose(rng, other, max(5, int(n_words * rng.uniform(0.05, 0.25))))
                at = int(rng.integers(0, len(text)))  # anywhere: no window is favoured
                cut = text.find(" ", at)
                cut = at if cut < 0 else cut
                text = f"{text[:cut]}\n{insert}\n{text[cut:]}"
            elif kind == 2:  # navigation boilerplate around the body
                k = int(rng.integers(1, 4))
                head = "\n".join(BOILERPLATE_LINES[j % len(BOILERPLATE_LINES)] for j in range(k))
                text = f"{head}\n{text}\n{head}"
            out.append((lang, text))
    return out


def _timed(stage: LanguageIdentifier, texts: list[str]) -> tuple[list[str], float]:
    # CPU time of this process: the machine is shared, and wall time would count the others.
    t0 = time.process_time()
    labels, _ = stage.predict(texts)
    return labels, time.process_time() - t0


def run(docs_per_language: int, candidates: list[int | None], repeats: int, windows: int,
        full_text_below: float) -> None:
    corpus = multilingual_corpus(docs_per_language)
    langs = [lang for lang, _ in corpus]
    texts = [t for _, t in corpus]
    stages = {c: LanguageIdentifier(mode="annotate", max_chars=c, windows=windows,
                                    full_text_below=full_text_below)
              for c in candidates}
    for s in stages.values():
        s.setup()
    labels: dict[int | None, list[str]] = {}
    times: dict[tuple[int | None, str], list[float]] = {}
    for _ in range(repeats):
        for c, stage in stages.items():  # interleaved: every candidate once per repeat
            for lang in LANGS:
                idx = [i for i, x in enumerate(langs) if x == lang]
                got, dt = _timed(stage, [texts[i] for i in idx])
                times.setdefault((c, lang), []).append(len(idx) / dt)
                lab = labels.setdefault(c, [""] * len(texts))
                for i, g in zip(idx, got):
                    lab[i] = g
    full = labels[None]
    mean_len = {lang: int(np.mean([len(t) for t, x in zip(texts, langs) if x == lang])) for lang in LANGS}
    print(f"corpus: {len(texts)} documents, {len(LANGS)} languages, windows={windows}, "
          f"full_text_below={full_text_below}, "
          f"repeats={repeats} (docs/s per core: min/median/max)")
    print(f"{'max_chars':>9} {'lang':>4} {'chars':>6} {'agree>200':>9} {'truth':>6} "
          f"{'docs/s min/med/max':>22} {'speed-up':>8}")
    for c in candidates:
        for lang in [*LANGS, "all"]:
            idx = [i for i, x in enumerate(langs) if lang in ("all", x) and len(texts[i]) > 200]
            agree = sum(labels[c][i] == full[i] for i in idx) / len(idx)
            truth = sum(labels[c][i] == langs[i] for i in idx) / len(idx)
            if lang == "all":
                rate = [len(texts) / sum(len([x for x in langs if x == lg]) / times[(c, lg)][r]
                                         for lg in LANGS) for r in range(repeats)]
                base = [len(texts) / sum(len([x for x in langs if x == lg]) / times[(None, lg)][r]
                                         for lg in LANGS) for r in range(repeats)]
                chars = int(np.mean([len(t) for t in texts]))
            else:
                rate, base, chars = times[(c, lang)], times[(None, lang)], mean_len[lang]
            speed = statistics.median(rate) / statistics.median(base)
            print(f"{str(c):>9} {lang:>4} {chars:>6} {agree:>9.4f} {truth:>6.3f} "
                  f"{min(rate):>6.0f}/{statistics.median(rate):>6.0f}/{max(rate):>6.0f} "
                  f"{speed:>7.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs-per-language", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--max-chars", type=int, nargs="*", default=[300, 600, 1000])
    ap.add_argument("--full-text-below", type=float, default=0.8)
    args = ap.parse_args(argv)
    run(args.docs_per_language, [None, *args.max_chars], args.repeats, args.windows,
        args.full_text_below)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
