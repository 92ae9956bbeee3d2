"""A word-level CLIP tokenizer built offline for the embedded mini Stable Diffusion.

The tokenizer is a real ``transformers.CLIPTokenizer`` (byte-level BPE with ``</w>`` word ends) so
that diffusers code paths (``encode_prompt``, ``load_textual_inversion``) treat it exactly as SD's.
Its merges are learned here by plain BPE training over a small word list, so that every word of the
shapes world's captions (and a few template words) is exactly one token. Any other text still
tokenizes, at byte/character level, because all 256 byte symbols are in the vocabulary.

BPE encoding replays merges in rank order; because the merges were *trained* on the same word list,
replaying them reproduces the training segmentation, i.e. each listed word ends as one token.
"""

from __future__ import annotations

import collections
from functools import lru_cache
from typing import Iterable

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words outside the captions that prompt templates use (e.g. textual-inversion templates).
TEMPLATE_WORDS = ("photo", "of", "the", "picture", "image", "an", "shape", "object", "and", "with")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _symbols(word: str) -> tuple[str, ...]:
    table = bytes_to_unicode()
    chars = [table[b] for b in word.encode("utf-8")]
    chars[-1] = chars[-1] + "</w>"
    return tuple(chars)


def learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Train BPE merges until every word is a single symbol (ties broken lexicographically)."""
    segs = {w: _symbols(w) for w in sorted(set(words))}
    merges: list[tuple[str, str]] = []
    while True:
        counts: collections.Counter = collections.Counter()
        for seg in segs.values():
            for pair in zip(seg, seg[1:]):
                counts[pair] += 1
        if not counts:
            return merges
        best = max(counts.items(), key=lambda kv: (kv[1], tuple(-ord(c) for c in kv[0][0] + kv[0][1])))[0]
        merges.append(best)
        for w, seg in segs.items():
            out, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and (seg[i], seg[i + 1]) == best:
                    out.append(seg[i] + seg[i + 1])
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segs[w] = tuple(out)


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary layout: bytes, bytes + ``</w>``, one entry per merge, then BOS/EOS."""
    base = list(bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}


def build_word_tokenizer(words: Iterable[str], model_max_length: int = 24):
    """A ``CLIPTokenizer`` in which each of ``words`` is exactly one token."""
    from transformers import CLIPTokenizer

    words = [w.lower() for w in words]
    merges = learn_merges(words)
    vocab = build_vocab(merges)
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m) for m in merges],
        model_max_length=model_max_length,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
    )
    return tok
