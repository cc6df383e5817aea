"""The tiny model's byte-level BPE vocabulary: small, but it packs text like DeepSeek's.

DeepSeek's 128K-token vocabulary writes common English words and JSON keys as one token each,
so Open WebUI's 36 built-in tool definitions (23,000 characters) take a few thousand tokens.
A vocabulary of bare bytes would take 18,000 for them (measured on v0.32.15:
``prompt_eval_count`` 18,162 with 56 merges), overflow a 16K context and spend most of a test
in prefill. So the merges here are learnt, by plain BPE, from a fixed word list: common English
words, the words of JSON Schema tool definitions and of chat-task prompts, and JSON's
punctuation runs. Every listed word then is one token (3.3 characters a token on those tools).

Deterministic and standard library only; learnt once per process.
"""

from __future__ import annotations

import functools
import heapq
from collections import defaultdict
from itertools import pairwise

#: A few hundred of the most frequent English words.
_ENGLISH = """
the of and to a in is it you that he was for on are with as i his they be at one have this from or had
by not word but what some we can out other were all there when up use your how said an each she which do
their time if will way about many then them write would like so these her long make thing see him two has
look more day could go come did number sound no most people my over know water than call first who may down
side been now find any new work part take get place made live where after back little only round man year
came show every good me give our under name very through just form sentence great think say help low line
differ turn cause much mean before move right boy old too same tell does set three want air well also play
small end put home read hand port large spell add even land here must big high such follow act why ask men
change went light kind off need house picture try us again animal point mother world near build self earth
father head stand own page should country found answer school grow study still learn plant cover food sun
four between state keep eye never last let thought city tree cross farm hard start might story saw far sea
draw left late run while press close night real life few north open seem together next white children begin
got walk example ease paper group always music those both mark often letter until mile river car feet care
second book carry took science eat room friend began idea fish mountain stop once base hear horse cut sure
watch color face wood main enough plain girl usual young ready above ever red list though feel talk bird
soon body dog family direct pose leave song measure door product black short numeral class wind question
happen complete ship area half rock order fire south problem piece told knew pass since top whole king space
heard best hour better true during hundred five remember step early hold west ground interest reach fast
verb sing listen six table travel less morning ten simple several vowel toward war lay against pattern slow
center love person money serve appear road map rain rule govern pull cold notice voice unit power town fine
certain fly fall lead cry dark machine note wait plan figure star box noun field rest correct able pound
done beauty drive stood contain front teach week final gave green oh quick develop ocean warm free minute
strong special mind behind clear tail produce fact street inch multiply nothing course stay wheel full force
blue object decide surface deep moon island foot system busy test record boat common gold possible plane
stead dry wonder laugh thousand ago ran check game shape equate hot miss brought heat snow tire bring yes
distant fill east paint language among sky
"""
#: The words of tool definitions (JSON Schema, Open WebUI's built-in tools) and of chat-task
#: prompts (titles, tags, follow-ups).
_TOOLS_AND_TASKS = """
type object string integer number boolean array null true false properties property required description
items enum default format parameters parameter function functions name names arguments argument tool tools
user users assistant system result results limit count maximum minimum max min date dates time times
timestamp timestamps list search create created update updated delete deleted view get set file files
note notes memory memories chat chats event events calendar knowledge base bases task tasks title text
value values key keys path paths page pages data error errors message messages response request optional
return returns skip match matching query queries content contents id ids json schema call calls calling
output input access following adhere exact chain directly without separators spaces strictly valid
important where current seconds unix adjusted days weeks months years calculate filtering examples
continuing depends intent preference tradeoff inferred safely allow whether instead choosing options
option label recommend labels recommended browser cancelling accessible relevant internal source chosen
semantic similarity meaning helpful discovering natural pagination regular expression case sensitive
grep within specific previous conversations conversation summary summaries folder folders automation
automations schedule recurring prompt prompts skill skills replace existing entire instructions workflow
location attendees status pending completed progress toggle enable enabled disable disabled fields
identifier returned snippet snippets lines range ranges offset tag tags category categories topic topics
subject concise summarizing generate generated suggest suggestions useful questions asked history based
primary guidelines strict only emoji emojis avoid quotation marks formatting english
"""
#: Runs of JSON punctuation as DeepSeek's pre-tokenizer cuts them (punctuation apart from words).
_PUNCTUATION = ('":"', '":{"', '"},"', '","', '":["', '"],"', '":', '",', '"}', '"]', '{"',
                '}}}', '}}', '":{', '"},', '"}}', '(', ').', '),', ': ', '.\n')


@functools.cache
def byte_tokens() -> tuple[str, ...]:
    """GPT-2's bytes_to_unicode: the 256 byte tokens of a byte-level BPE vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    extra = 0
    chars = {}
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


def _byte_level(text: str) -> str:
    table = byte_tokens()
    return "".join(table[b] for b in text.encode("utf-8"))


def training_words() -> list[str]:
    """Each word bare, capitalised, and after a space (how it appears mid-sentence)."""
    words: dict[str, None] = {}
    for word in (_ENGLISH + _TOOLS_AND_TASKS).split():
        for form in (word, word.capitalize()):
            words[_byte_level(form)] = None
            words[_byte_level(" " + form)] = None
    for run in _PUNCTUATION:
        words[_byte_level(run)] = None
    return list(words)


def learn_merges(words: list[str]) -> tuple[str, ...]:
    """Plain BPE on ``words`` until each is one token: the most frequent adjacent pair first
    (ties: the smaller pair), with a heap of pair counts updated as words change."""
    symbols = [list(word) for word in words]
    counts: dict[tuple[str, str], int] = defaultdict(int)
    holders: dict[tuple[str, str], set[int]] = defaultdict(set)
    for index, word in enumerate(symbols):
        for pair in pairwise(word):
            counts[pair] += 1
            holders[pair].add(index)
    heap = [(-n, pair) for pair, n in counts.items()]
    heapq.heapify(heap)
    learnt: list[str] = []
    while heap:
        negative, pair = heapq.heappop(heap)
        if -negative != counts.get(pair, 0) or negative == 0:
            continue  # stale: the pair's count changed after this entry was pushed
        learnt.append(f"{pair[0]} {pair[1]}")
        changed: set[tuple[str, str]] = set()
        for index in holders.pop(pair):
            word = symbols[index]
            for old in pairwise(word):
                counts[old] -= 1
                changed.add(old)
            symbols[index] = word = _merge_pair(word, pair)
            for new in pairwise(word):
                counts[new] += 1
                holders[new].add(index)
                changed.add(new)
        counts.pop(pair, None)
        changed.discard(pair)
        for other in changed:
            if counts[other] > 0:
                heapq.heappush(heap, (-counts[other], other))
    return tuple(learnt)


def _merge_pair(word: list[str], pair: tuple[str, str]) -> list[str]:
    merged, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            merged.append(word[i] + word[i + 1])
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return merged


@functools.cache
def merges() -> tuple[str, ...]:
    return learn_merges(training_words())


__all__ = ["byte_tokens", "learn_merges", "merges", "training_words"]
