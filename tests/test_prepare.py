"""Claims of prepare.py: each tokenizer round-trips, datasets are never rebuilt unasked, the concepts
corpus is reproducible and matches its lexicon, batches are next-token pairs."""
import json
import os
import re
import sys

import numpy as np
import pytest
import torch

from conftest import run
from prepare import (FILLER_WORDS, LEXICON, concept_ceiling, concepts_text, get_batch, get_tokenizer, load_meta,
                     open_split, topic_lift, word_join, word_split)

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20


def gpt2_available():
    try:
        import tiktoken
        tiktoken.get_encoding('gpt2')
        return True
    except Exception:
        return False


@pytest.mark.parametrize('tok', ['char', 'word', 'gpt2'])
def test_prepare_a_local_file_round_trips(tok, tmp_path):
    if tok == 'gpt2' and not gpt2_available():
        pytest.skip('the GPT-2 tokenizer needs tiktoken files: set TIKTOKEN_CACHE_DIR (CI does)')
    src = tmp_path / 'in.txt'
    src.write_text(TEXT)
    r = run('prepare.py', f'--input={src}', f'--tokenizer={tok}', '--name=tiny', f'--data_dir={tmp_path}')
    assert r.returncode == 0, r.stderr
    meta = load_meta('tiny', str(tmp_path))
    assert meta['tokenizer'] == tok
    ids = np.concatenate([open_split('tiny', s, str(tmp_path)) for s in ('train', 'val')])
    assert ids.dtype == np.uint16 and len(ids) == meta['train_tokens'] + meta['val_tokens']
    encode, decode = get_tokenizer(meta)
    assert decode(ids.tolist()) == TEXT
    assert encode(TEXT) == ids.tolist()
    if tok == 'char':  # a split deleted by hand: one line, not a traceback
        (tmp_path / 'tiny' / 'val.bin').unlink()
        with pytest.raises(SystemExit) as e:
            open_split('tiny', 'val', str(tmp_path))
        assert e.value.code == 2


def test_word_tokens_rejoin_into_the_text():
    text = "the cat, it's here.\nsee: a dog!\n"
    assert word_split(text)[:4] == ['the', 'cat', ',', "it's"]
    assert word_join(word_split(text)) == text
    assert word_join(word_split("the café, it’s naïve.\n")) == "the café, it’s naïve.\n"  # e-book text is not ASCII
    assert word_join(word_split("and ’tis so, and 'tis so")) == "and ’tis so, and 'tis so"  # either apostrophe starts a word
    assert word_join(word_split("said ‘rain.’ and (so) “left”")) == "said ‘rain.’ and (so) “left”"  # openers, closers
    assert word_join(word_split('a - "b"')) == 'a-" b"'  # the tokenizer keeps no spacing: the rest is a guess


def test_a_prompt_outside_the_vocabulary_names_the_unknown_symbols():
    encode, _ = get_tokenizer({'tokenizer': 'char', 'vocab': list('abc ')})
    with pytest.raises(ValueError, match="'z'"):
        encode('a z')


def test_an_existing_dataset_is_not_rebuilt_without_force(tmp_path):
    src = tmp_path / 'in.txt'
    src.write_text(TEXT)
    args = [f'--input={src}', '--name=tiny', f'--data_dir={tmp_path}']
    assert run('prepare.py', *args).returncode == 0
    before = os.path.getmtime(tmp_path / 'tiny' / 'train.bin')
    src.write_text(TEXT.upper())
    r = run('prepare.py', *args)
    assert r.returncode == 0 and 'already exists' in r.stdout
    assert os.path.getmtime(tmp_path / 'tiny' / 'train.bin') == before
    assert run('prepare.py', *args, '--force=True').returncode == 0
    assert 'F' in load_meta('tiny', str(tmp_path))['vocab'] and 'r' not in load_meta('tiny', str(tmp_path))['vocab']
    assert sorted(os.listdir(tmp_path)) == ['in.txt', 'tiny']  # the old dataset, moved aside, is gone
    # another text, or another tokenizer, asked for under the same name: refused, not silently the old data
    (tmp_path / 'other.txt').write_text(TEXT)
    for other in ([f'--input={tmp_path / "other.txt"}', '--name=tiny'], [*args[:2], '--tokenizer=word']):
        r = run('prepare.py', *other, f'--data_dir={tmp_path}')
        assert r.returncode == 2 and '--force=True rebuilds it' in r.stderr and r.stderr.count('\n') == 1
    assert 'F' in load_meta('tiny', str(tmp_path))['vocab']


def test_a_concepts_dataset_of_other_settings_is_not_taken_for_the_one_asked(tmp_path):
    assert run('prepare.py', 'concepts', '--concept_sentences=300', f'--data_dir={tmp_path}').returncode == 0
    r = run('prepare.py', 'concepts', '--concept_sentences=300', f'--data_dir={tmp_path}')
    assert r.returncode == 0 and 'already exists' in r.stdout
    r = run('prepare.py', 'concepts', '--seed=1', f'--data_dir={tmp_path}')
    assert r.returncode == 2 and 'holds word tokens of concepts (seed 1337' in r.stderr and r.stderr.count('\n') == 1
    for other, said in (('--concept_sentences=400', '--concept_sentences=300, not 400'),
                        ('--val_fraction=0.2', '--val_fraction=0.1, not 0.2')):  # the size and the split too
        r = run('prepare.py', 'concepts', '--concept_sentences=300', other, f'--data_dir={tmp_path}')
        assert r.returncode == 2 and said in r.stderr and r.stderr.count('\n') == 1
    meta = load_meta('concepts', str(tmp_path))
    assert (meta['concept_sentences'], meta['val_fraction']) == (300, 0.1)
    del meta['concept_sentences']  # a dataset from before these were recorded is still taken
    (tmp_path / 'concepts' / 'meta.json').write_text(json.dumps(meta))
    r = run('prepare.py', 'concepts', '--concept_sentences=300', f'--data_dir={tmp_path}')
    assert r.returncode == 0 and 'already exists' in r.stdout


def test_a_torn_or_unreadable_dataset_says_to_prepare_it_again(tmp_path):
    assert run('prepare.py', 'concepts', '--concept_sentences=300', f'--data_dir={tmp_path}').returncode == 0
    with open(tmp_path / 'concepts' / 'val.bin', 'ab') as f:
        f.write(b'x')  # half a token
    r = run('train.py', '--dataset=concepts', f'--data_dir={tmp_path}', f'--out_dir={tmp_path}/out', '--device=cpu')
    assert r.returncode == 2 and 'is torn (an odd number of bytes)' in r.stderr and r.stderr.count('\n') == 1
    for torn in ('{"tokenizer": ', '{"vocab_size": 3}'):
        (tmp_path / 'concepts' / 'meta.json').write_text(torn)
        for r in (run('train.py', '--dataset=concepts', f'--data_dir={tmp_path}', f'--out_dir={tmp_path}/out', '--device=cpu'),
                  run('prepare.py', 'concepts', '--concept_sentences=300', f'--data_dir={tmp_path}')):
            assert r.returncode == 2 and "meta.json is not a dataset's meta.json" in r.stderr and r.stderr.count('\n') == 1


@pytest.mark.parametrize('args,message', [
    (['nosuch'], "unknown dataset 'nosuch'"),
    ([], 'name one dataset'),
    (['--input=/no/such/file', '--name=x'], 'input file /no/such/file not found'),
    (['--input=x.txt'], '--name=NAME'),
    (['--input=/etc/hostname', '--name=downloads'], 'a dataset name is a plain folder name'),
    (['--input=/etc/hostname', '--name=../up'], 'a dataset name is a plain folder name'),
    (['concepts', '--concept_per_line=0,2'], '--concept_per_line takes MIN,MAX with 1 <= MIN <= MAX'),
    (['concepts', '--filler_per_line='], '--filler_per_line MIN,MAX with 0 <= MIN <= MAX'),
    (['concepts', '--val_fraction=1.5'], '--val_fraction is the share of the text kept for validation'),
    (['--input=/etc', '--name=x'], 'input file /etc is a folder: give a text file'),
    (['concepts', '--tokenizer=char'], '--tokenizer applies to --input=FILE; concepts has its own tokenizer, word'),
    (['shakespeare_char', '--seed=3'], '--seed does not apply to shakespeare_char'),
    (['bogus', '--seed=3'], "unknown dataset 'bogus'"),  # not that the seed does not apply
    (['tinystories', '--val_fraction=0.2'], '--val_fraction does not apply to tinystories'),
    (['concepts', '--concept_sentences=0'], '--concept_sentences is how many sentences the concepts corpus has'),
    ([f'--input={sys.executable}', '--name=x'], 'is not UTF-8 text (byte '),
])
def test_prepare_mistakes_exit_2_with_one_line(args, message, tmp_path):
    r = run('prepare.py', *args, f'--data_dir={tmp_path}')
    assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1


def test_a_data_dir_that_is_a_file_exits_2_with_one_line(tmp_path):
    (tmp_path / 'd').write_text('notes')
    r = run('prepare.py', '--input=/etc/hostname', '--name=x', f'--data_dir={tmp_path / "d"}')
    assert r.returncode == 2 and 'is a file: give a folder' in r.stderr and r.stderr.count('\n') == 1
    r = run('prepare.py', 'concepts', f'--data_dir={tmp_path / "d" / "sub"}')  # a folder inside a file
    assert r.returncode == 2 and f'is inside {tmp_path / "d"}, a file' in r.stderr and r.stderr.count('\n') == 1


@pytest.mark.parametrize('text,val_fraction', [('', 0.1), ('abc', 0.9)])
def test_an_empty_split_exits_2_with_one_line(text, val_fraction, tmp_path):
    (tmp_path / 'in.txt').write_text(text)
    r = run('prepare.py', f'--input={tmp_path}/in.txt', '--name=x', f'--data_dir={tmp_path}',
            f'--val_fraction={val_fraction}')
    assert r.returncode == 2 and 'leaves an empty train or val split' in r.stderr and r.stderr.count('\n') == 1
    assert not os.path.exists(tmp_path / 'x')


def test_the_val_cut_moves_to_a_line_break_only_when_one_is_near(tmp_path):
    (tmp_path / 'in.txt').write_text('Title\n' + 'x' * 10000)  # a text that is one long line after its title
    assert run('prepare.py', f'--input={tmp_path}/in.txt', '--name=x', f'--data_dir={tmp_path}').returncode == 0
    assert os.path.getsize(tmp_path / 'x' / 'val.bin') // 2 == 1001  # the last 10%, not all but 'Title\n'


def test_with_no_line_break_near_the_val_cut_moves_back_to_a_space_or_the_start_of_a_word(tmp_path):
    # a line of words with no line break near the cut: cut mid-word, its halves would be unknown words
    (tmp_path / 'in.txt').write_text('the day came ' * 5)  # 90% of it ends in 'da|y'
    r = run('prepare.py', f'--input={tmp_path}/in.txt', '--name=x', '--tokenizer=word', f'--data_dir={tmp_path}')
    assert r.returncode == 0, r.stderr
    meta = load_meta('x', str(tmp_path))
    assert meta['vocab'] == ['came', 'day', 'the'] and meta['val_tokens'] == 2  # 'day came'
    # and with no space either (text without spaces, like Chinese): back to where the word starts
    (tmp_path / 'in.txt').write_text('ab cd\n' * 10 + 'efghij' * 50)  # the cut falls 240 letters into a word
    r = run('prepare.py', f'--input={tmp_path}/in.txt', '--name=y', '--tokenizer=word', f'--data_dir={tmp_path}')
    assert r.returncode == 0, r.stderr
    meta = load_meta('y', str(tmp_path))
    assert len(meta['vocab']) == 4 and meta['val_tokens'] == 1  # the long word, whole


def test_concepts_corpus_is_reproducible_and_uses_only_lexicon_words(data_dir):
    assert concepts_text(200, seed=5) == concepts_text(200, seed=5) != concepts_text(200, seed=6)
    with open(os.path.join(data_dir, 'concepts', 'lexicon.json')) as f:
        assert json.load(f) == LEXICON
    words = [w for ws in LEXICON.values() for w in ws]
    assert len(words) == len(set(words))  # each word is in one concept only
    vocab = set(load_meta('concepts', data_dir)['vocab'])
    assert set(words) <= vocab and len(vocab - set(words)) < 80  # the rest: function words of the templates


def test_filler_sentences_make_the_concepts_rarer_and_hold_no_concept_word():
    concept_words = {w for ws in LEXICON.values() for w in ws}
    filler_words = {w for ws in FILLER_WORDS.values() for w in ws}
    share = lambda text: sum(w in concept_words for w in text.split()) / len(text.split())
    plain, rare = concepts_text(3000, seed=5), concepts_text(3000, seed=5, per_line=(1, 2), filler=(3, 5))
    assert not filler_words & concept_words and filler_words & set(rare.split())
    assert share(rare) < share(plain) / 3  # 1-2 sentences of 4-7 hold concept words, against all 2-4


def test_concepts_lines_carry_a_topic_that_bounds_fluent_steering():
    topics, text = [], concepts_text(300, seed=5)
    assert concepts_text(300, seed=5, topics=topics) == text  # the record draws nothing
    assert len(topics) == text.count('\n')  # one topic per line
    lift = topic_lift(20000)
    assert all(2 < x < 5 for x in lift.values()), lift  # a topic's words are 2-5x denser in its lines


def test_no_sentence_of_the_corpus_holds_a_concept_more_densely_than_its_ceiling():
    ceiling = concept_ceiling(5000)
    concept_of = {w: c for c, ws in LEXICON.items() for w in ws}
    densest = dict.fromkeys(LEXICON, 0)
    for sentence in re.split(r' \.\s*', concepts_text(5000, seed=5)):  # every sentence ends ' .'
        words = [w for w in sentence.split() if w.isalpha()]
        for c in LEXICON:  # max(1, ...): the text's end leaves one empty piece
            densest[c] = max(densest[c], sum(concept_of.get(w) == c for w in words) / max(1, len(words)))
    assert {c: round(d, 3) for c, d in densest.items()} == {c: s for c, (s, _) in ceiling.items()}  # reached, not passed
    assert ceiling['numbers'] == (0.143, pytest.approx(5.4, abs=0.2))  # 'they waited {numbers} hours for the {noun} .'


def test_batches_are_inputs_and_their_next_tokens():
    data = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(data, 8, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)


def test_a_folder_that_is_not_a_dataset_is_never_replaced(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
    src = tmp_path / 'in.txt'
    src.write_text(TEXT)
    r = run('prepare.py', f'--input={src}', '--name=mine', f'--data_dir={tmp_path}', '--force=True')
    assert r.returncode == 2 and 'is not a dataset' in r.stderr
    assert (tmp_path / 'mine' / 'notes.txt').read_text() == 'keep me'


def test_a_text_without_line_breaks_still_gets_a_train_split(tmp_path):
    src = tmp_path / 'in.txt'
    src.write_text('abcdefghij' * 100)
    assert run('prepare.py', f'--input={src}', '--name=flat', f'--data_dir={tmp_path}').returncode == 0
    meta = load_meta('flat', str(tmp_path))
    assert meta['train_tokens'] == 900 and meta['val_tokens'] == 100


def test_a_download_makes_its_folder_on_a_fresh_data_dir(tmp_path, monkeypatch):
    """tinyshakespeare_char and tinystories download into data_dir/downloads, which a fresh data_dir lacks."""
    import urllib.request

    import prepare

    def fake_urlretrieve(url, path):  # no internet here: write what the server would have sent
        with open(path, 'w') as f:
            f.write('To be, or not to be\n')
    monkeypatch.setattr(urllib.request, 'urlretrieve', fake_urlretrieve)
    path = prepare.download('https://example.org/t.txt', str(tmp_path / 'fresh' / 'downloads' / 't.txt'))
    assert open(path).read() == 'To be, or not to be\n' and not os.path.exists(path + '.part')


def test_a_checkpoint_fits_a_dataset_by_its_fingerprint_or_else_by_its_vocabulary_size():
    from prepare import tokenizer_id, vocab_fits
    word = {'tokenizer': 'word', 'vocab_size': 168, 'vocab': [str(i) for i in range(168)]}
    gpt2 = {'tokenizer': 'gpt2', 'vocab_size': 50257}
    ours = {'tokenizer': tokenizer_id(word)}
    assert vocab_fits(word, ours, 168) and vocab_fits(word, ours, 200)  # a fine-tune from a larger vocabulary
    assert not vocab_fits(word, {'tokenizer': tokenizer_id(dict(word, vocab=word['vocab'][::-1]))}, 168)
    assert vocab_fits(word, {}, 168) and not vocab_fits(word, {}, 65)  # nanoGPT's: no fingerprint
    assert vocab_fits(gpt2, {}, 50304) and not vocab_fits(gpt2, {}, 65)  # GPT-2's vocabulary, padded
    assert not vocab_fits(word, ours, 100)  # ids past the model's embedding


def test_a_setting_that_asks_for_what_the_dataset_does_anyway_is_accepted(tmp_path):
    src = tmp_path / 'in.txt'
    src.write_text(TEXT)
    r = run('prepare.py', 'concepts', '--tokenizer=word', '--concept_sentences=2000', f'--data_dir={tmp_path}')
    assert r.returncode == 0, r.stderr  # concepts is a word dataset
    r = run('prepare.py', f'--input={src}', '--name=tiny', '--seed=1337', f'--data_dir={tmp_path}')
    assert r.returncode == 0, r.stderr  # the default seed: nothing asked for that --input cannot give
