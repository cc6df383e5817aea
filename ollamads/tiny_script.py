"""How the scripted tiny model spells its replies: which token follows which.

The scripted model (:func:`ollamads.tiny.write_scripted_model`) has no memory beyond the token it
has just read: attention and FFN outputs are zero, so the last hidden state is that token's own
embedding, and the output matrix maps it to the next token. A reply can therefore be emitted
only if no token occurs twice in it. This module cuts a reply into such tokens: each special
token (``<｜tool▁calls▁begin｜>``...) is the real special token the first time it occurs, and
text (and any repeat of a special token) becomes new user-defined tokens, one per word where
the word is new, longer pieces where it is not. Detokenized, the pieces give back the reply
exactly, so a server's parsers see what a real model would write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ScriptPlan:
    #: New user-defined tokens, appended to the vocabulary in this order.
    added: tuple[str, ...]
    #: Each reply as token ids (ids of ``added`` count from ``first_added_id``), EOS excluded.
    chains: tuple[tuple[int, ...], ...]


def _segments(text: str, specials: Sequence[str]) -> list[str]:
    pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    out: list[str] = []
    for part in re.split(pattern, text):
        if not part:
            continue
        if part in specials:
            out.append(part)
        else:
            # A word with the whitespace before it, as BPE vocabularies cut text; whitespace at
            # the end stays with the last word. A piece of whitespace alone could be what a
            # prompt ends with (R1's "<think>\n"), and would then start the reply mid-way.
            words = re.findall(r"\s*\S+\s*$|\s*\S+|\s+", part)
            if out and words and not words[0].strip() and out[-1] not in specials:
                out[-1] += words.pop(0)
            out.extend(words)
    return out


def plan_script(
    vocab: Sequence[str], specials: Mapping[str, int], replies: Sequence[str]
) -> ScriptPlan:
    """Token ids for each of ``replies``, no id used twice across all of them."""
    known = set(vocab)
    first_added = len(vocab)
    added: list[str] = []
    used: set[int] = set()
    chains: list[tuple[int, ...]] = []

    def fresh(text: str) -> bool:
        # Never whitespace alone: a prompt can end with it (R1's "<think>\n").
        return bool(text.strip()) and text not in known and text not in added

    for reply in replies:
        if not reply:
            raise ValueError("a scripted reply cannot be empty")
        chain: list[int] = []
        pending = ""
        for seg in _segments(reply, tuple(specials)):
            sid = specials.get(seg)
            if sid is not None and sid not in used and not pending:
                chain.append(sid)
                used.add(sid)
                continue
            pending += seg
            if fresh(pending):
                added.append(pending)
                chain.append(first_added + len(added) - 1)
                pending = ""
        if pending:
            last = chain[-1] if chain else None
            if last is None or last < first_added or not fresh(added[last - first_added] + pending):
                raise ValueError(f"cannot spell the end of {reply!r} with tokens of its own")
            added[last - first_added] += pending
        chains.append(tuple(chain))
    return ScriptPlan(tuple(added), tuple(chains))


__all__ = ["ScriptPlan", "plan_script"]
