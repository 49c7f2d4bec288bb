"""Readable samples, measured: the share of a sample's words found in train or dev."""
from __future__ import annotations

from lm.distill.samples import word_share, words


def test_word_share_counts_words_in_the_vocabulary() -> None:
    vocab = set(words("A auga do río e a auga do mar"))
    # the last word of a sample is cut off mid-word, so it is not counted unless `cut` is off
    assert word_share(["a auga do xyzzy mar", "río plof"], vocab) == {"share": 0.8, "words": 5}
    assert word_share(["a auga do xyzzy mar"], vocab, cut=False) == {"share": 0.8, "words": 5}
    assert word_share(["2024 auga"], vocab, cut=False) == {"share": 1.0, "words": 1}  # numbers are not words
    assert word_share([], vocab) == {"share": None, "words": 0}
