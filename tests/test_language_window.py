"""Language id on sampled windows agrees with full-text labels (no timing here: see
benchmarks/bench_language.py for the speed)."""

from __future__ import annotations

import pytest

from benchmarks.bench_language import multilingual_corpus
from curator_stages.text.language import DEFAULT_MAX_CHARS, LanguageIdentifier, sample_windows


def test_windowed_labels_agree_with_full_text_on_a_multilingual_corpus():
    corpus = multilingual_corpus(60, seed=7)
    texts = [t for _, t in corpus if len(t) > 200]
    assert len({lang for lang, _ in corpus}) >= 6
    assert sum(len(t) > DEFAULT_MAX_CHARS for t in texts) > len(texts) // 2  # windows do apply
    full, _ = LanguageIdentifier(mode="annotate", max_chars=None).predict(texts)
    sampled, _ = LanguageIdentifier(mode="annotate").predict(texts)
    agree = sum(a == b for a, b in zip(full, sampled)) / len(texts)
    assert agree >= 0.995, f"windowed labels agree with full text on {agree:.2%} only"


def test_sample_windows_are_bounded_spread_and_keep_unspaced_scripts():
    text = " ".join(f"w{i:05d}" for i in range(5000))  # 30 kB
    sample = sample_windows(text, 600, 3)
    assert len(sample) <= 600
    words = sample.split()
    assert words[0] == "w00000" and words[-1] == "w04999"  # start and end are both seen
    assert all(len(w) == 6 for w in words)  # no word cut at a slice edge
    zh = "我们今天去学校上课老师讲了历史" * 200
    assert len(sample_windows(zh, 300, 3)) >= 290
    assert sample_windows("short text", 600, 3) == "short text"


@pytest.mark.parametrize("kwargs,field", [
    ({"max_chars": 10}, "max_chars"), ({"windows": 0}, "windows"),
    ({"full_text_below": 1.5}, "full_text_below"),
])
def test_bad_window_parameters_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LanguageIdentifier(**kwargs)
