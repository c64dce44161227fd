"""Sentences to synthesize for training: common English words in random order, with
punctuation, numbers now and then, and a share of words drawn from the pronunciation
dictionary for phonetic variety. Grammar does not matter to lips; phonetic coverage does."""
from __future__ import annotations

import numpy as np

COMMON = """the be to of and a in that have it for not on with he as you do at this but his by
from they we say her she or an will my one all would there their what so up out if about who
get which go me when make can like time no just him know take people into year your good some
could them see other than then now look only come its over think also back after use two how
our work first well way even new want because any these give day most us is was are were been
has had did said made went took came saw knew thought told found gave asked seemed felt tried
left called kept began brought held turned moved lived believed happened paid met included
continued set learned changed led understood watched followed stopped created spoke read
allowed added spent grew opened walked won offered remembered loved considered appeared bought
waited served died sent expected built stayed fell cut reached killed remained suggested
raised passed sold required reported decided pulled house world school family group country
problem hand part place case week company system program question number night point home
water room mother area money story fact month lot right study book eye job word business issue
side kind head service friend father power hour game line end member law car city community
name president team minute idea kid body information nothing ago lead social whether back
face others level office door health person art war history party result change morning
reason research girl guy moment air teacher force education foot boy age policy music market
sense nation plan college interest death experience effect class control care field
development role effort rate heart drug show leader light voice wife police mind price report
decision son view relationship town road arm difference value building action model season
society tax director position player record paper space ground form event official matter
center couple site project activity star table need court oil situation cost industry
figure street image phone data picture practice piece land product doctor wall patient worker
news test movie north love support technology step baby computer type attention film tree
source organization hair window evidence population truth song dog box peace quick brown fox
jumps lazy bright happy simple small large early young important few public bad same able
little free sure clear whole real best better true hot cold warm blue green red black white
open close maybe please thank hello yes okay very really quite never always often sometimes
usually today tomorrow yesterday tonight soon later here everywhere somewhere beautiful
wonderful terrible amazing strange famous perfect possible impossible""".split()

PUNCT = [".", ".", ".", "?", "!", ",", ";"]


def load_dictionary_words() -> list[str]:
    """Words of pocketsphinx's CMU dictionary (shipped in its wheel), alphabetic only."""
    import os

    import pocketsphinx

    path = os.path.join(os.path.dirname(pocketsphinx.__file__), "model", "en-us", "cmudict-en-us.dict")
    words = []
    with open(path, encoding="utf-8", errors="ignore") as f:
        for line in f:
            w = line.split(" ", 1)[0]
            if w.isalpha() and 2 <= len(w) <= 12:
                words.append(w)
    return words


def sentences(n: int, seed: int, rare_share: float = 0.2) -> list[str]:
    rng = np.random.default_rng(seed)
    rare = load_dictionary_words()
    out = []
    for _ in range(n):
        k = int(rng.integers(3, 16))
        words = []
        for _ in range(k):
            if rng.random() < rare_share:
                words.append(rare[int(rng.integers(len(rare)))])
            elif rng.random() < 0.03:
                words.append(str(int(rng.integers(1, 2000))))
            else:
                words.append(COMMON[int(rng.integers(len(COMMON)))])
        text = " ".join(words)
        if k > 7 and rng.random() < 0.4:  # a pause in the middle
            cut = int(rng.integers(2, k - 2))
            parts = text.split(" ")
            parts[cut] += ","
            text = " ".join(parts)
        out.append(text[0].upper() + text[1:] + PUNCT[int(rng.integers(len(PUNCT)))])
    return out
