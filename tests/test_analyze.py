"""Claims of analyze.py: the statistics are right on hand-built activations, emergence is found where
it is known, and each subcommand writes its report, PNGs and JSON (or one clear error)."""
import json
import math
import os
import shutil

import pytest
import torch

import analyze
from conftest import run, strict_json
from model import GPT, GPTConfig, load_checkpoint, topk_layers
from prepare import get_tokenizer, load_meta, open_split


def test_entropy_in_bits_of_known_distributions():
    mass = torch.tensor([[1.0, 4.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # (K=4, C=3)
    h = analyze.entropy_bits(mass)
    assert h[0].item() == pytest.approx(2.0)  # uniform over 4 tokens
    assert h[1].item() == 0.0  # all on one token
    assert math.isnan(h[2].item())  # a dead neuron has no distribution


def test_purity_best_concept_and_words_on_hand_built_top_activations(monkeypatch):
    labels = torch.tensor([0, 0, 0, 1, 2])  # tokens 0-2 are concept 0, token 3 concept 1, token 4 none
    # neuron 0: top activations on tokens 0,1,2,3 -> concept 0, purity 3/4, 3 words;
    # neuron 1: on token 3 twice; its zero activations (one of them on token 3 too) do not count
    top_v = torch.tensor([[5.0, 9.0], [4.0, 8.0], [3.0, 0.0], [2.0, 0.0]])
    top_tok = torch.tensor([[0, 3], [1, 3], [2, 3], [3, 4]])
    share, best, purity, words, concept_words = analyze.purity(top_v, top_tok, labels, torch.arange(5), n_concepts=2)
    assert best.tolist() == [0, 1] and purity.tolist() == [0.75, 1.0] and words.tolist() == [3, 1]
    assert concept_words.tolist() == [[3, 0], [1, 1]]  # neuron 0 also covers concept 1's one word
    # the same, but tokens 0-2 are one word in three spellings (' Rain', 'rain', 'Rain'): 1 word, not 3
    assert analyze.purity(top_v, top_tok, labels, torch.tensor([0, 0, 0, 3, 4]), 2)[3].tolist() == [1, 1]
    assert share.tolist() == [[0.75, 0.0], [0.25, 1.0]]
    stats = dict(best=best, purity=purity, words=words)
    assert analyze.concept_of(stats).tolist() == [-1, -1]  # 0.75 < 0.9; one word is a token detector
    monkeypatch.setattr(analyze, 'purity_threshold', 0.7)  # restored after the test, even a failed one
    monkeypatch.setattr(analyze, 'min_words', 1)
    assert analyze.concept_of(stats).tolist() == [0, 1]
    # top tokens come from activations above 0 only: neuron 1 never fired on token 4
    assert analyze.top_tokens(dict(top_v=top_v, top_tok=top_tok), 1) == [(3, 2)]


def test_a_concepts_best_neuron_spans_min_words_of_its_words():
    # 0:0 is purer but fires on one word (a token detector); 0:1 covers three
    stats = {0: dict(best=torch.tensor([0, 0]), purity=torch.tensor([1.0, 0.5]), words=torch.tensor([1, 3]))}
    assert analyze.concept_neurons(stats, ['weather']) == {'weather': (0, 1, 0.5)}


def test_the_context_skip_is_capped_at_half_a_window(data_dir):
    assert analyze.context_skip(64) == analyze.min_context == 8 and analyze.context_skip(8) == 4
    windows = analyze.val_windows('concepts', 100, 8, data_dir)  # each window reads its last 4 tokens
    val = torch.from_numpy(open_split('concepts', 'val', data_dir)[:4 + 4 * len(windows)].astype('int64'))
    assert analyze.n_read(windows) == 4 * len(windows) >= 96 and torch.equal(windows[:, 4:].flatten(), val[4:])


def test_a_purity_of_exactly_90_of_100_meets_the_threshold_everywhere():
    # 90 of 100 top activations on concept 0's three words: float32 makes the share 0.8999..., which the
    # tensor comparison of concept_of and the Python float comparison of the layer summary read differently
    labels = torch.tensor([0, 0, 0, 1])
    top_tok = torch.tensor([[0], [1], [2]] * 30 + [[3]] * 10)  # (100, 1)
    share, best, purity, words, _ = analyze.purity(torch.ones(100, 1), top_tok, labels, torch.arange(4), n_concepts=1)
    assert purity.tolist() == [0.9] and analyze.concept_of(dict(best=best, purity=purity, words=words)).tolist() == [0]
    stats = dict(frequency=torch.ones(1), token_entropy=torch.ones(1), semantic_entropy=torch.ones(1),
                 best=best, purity=purity, words=words)
    assert analyze.layer_summary({0: stats}, ['foods'])[0]['concepts_at_threshold'] == 1


def test_jaccard_of_top_token_sets():
    a = torch.tensor([[1, 2, 3, -1], [5, 6, -1, -1], [-1, -1, -1, -1]])
    b = torch.tensor([[2, 3, 4, -1], [5, 6, -1, -1], [-1, -1, -1, -1]])
    j = analyze.jaccard(a, b)
    assert j[0].item() == pytest.approx(0.5) and j[1].item() == 1.0 and math.isnan(j[2].item())


def test_emergence_is_the_first_step_from_which_the_concept_holds_to_the_end():
    steps = [0, 1, 2, 4, 8, 16]
    assert analyze.emergence_step(steps, [False, True, False, True, True, True]) == 4
    assert analyze.emergence_step(steps, [True] * 6) == 0
    assert analyze.emergence_step(steps, [True, True, True, True, True, False]) is None


def series_stats(neurons, width=4, n_concepts=3):
    """One checkpoint's per-layer statistics, as evolution keeps them, from {(layer, j): (concept, purity)}."""
    stats = {}
    for layer in (0, 1):
        best, purity = torch.full((width,), -1), torch.zeros(width)
        concept_purity = torch.zeros(n_concepts, width)
        for (l, j), (c, p) in neurons.items():
            if l == layer:
                best[j], purity[j], concept_purity[c, j] = c, p, p
        words = torch.full((width,), 3)
        stats[layer] = dict(best=best, purity=purity, words=words, concept_purity=concept_purity,
                            concept=torch.where(purity >= 0.9, best, torch.full_like(best, -1)))
    return stats


def test_evolution_follows_the_neuron_that_became_its_concepts_first():
    """A concept's emergence is when it got a stable neuron, not when its purest neuron at the end did."""
    steps = [0, 10, 20]
    per_ckpt = [series_stats({(0, 1): (0, 0.3), (1, 2): (0, 0.5), (0, 3): (2, 0.4)}),
                series_stats({(0, 1): (1, 0.95), (1, 2): (0, 0.91), (0, 0): (1, 0.92), (1, 0): (1, 0.97), (0, 3): (2, 0.5)}),
                series_stats({(0, 1): (0, 1.0), (1, 2): (0, 0.95), (0, 0): (1, 0.92), (1, 0): (1, 0.97), (0, 3): (2, 0.6)})]
    e = analyze.track_concepts(per_ckpt, steps, ['a', 'b', 'c'])
    # a: 0:1 is the purest at the end but an a-neuron only from 20; 1:2 has been one since 10
    assert (e['a']['layer'], e['a']['neuron'], e['a']['step']) == (1, 2, 10)
    assert e['a']['purity'] == pytest.approx([0.5, 0.91, 0.95])
    # b: two neurons since 10, the purer one at the end is followed
    assert (e['b']['layer'], e['b']['neuron'], e['b']['step']) == (1, 0, 10)
    # c: no c-neuron at the end; its purest neuron is followed and never emerged
    assert (e['c']['layer'], e['c']['neuron'], e['c']['step']) == (0, 3, None)
    assert e['c']['purity'] == pytest.approx([0.4, 0.5, 0.6])


def test_layer_agreement_and_the_indices_consistent_across_layers():
    l0, l1, l2 = torch.tensor([0, 1, -1, 2, -1]), torch.tensor([0, 2, -1, 2, 1]), torch.tensor([0, 1, -1, 2, -1])
    assert analyze.agreement(l0, l1) == pytest.approx(2 / 4)  # 4 concept neurons in either; 0 and 3 agree
    assert analyze.agreement(l0, l2) == 1.0 and analyze.agreement(l0, l0) == 1.0
    assert math.isnan(analyze.agreement(torch.full((3,), -1), torch.full((3,), -1)))  # none to agree on
    assert analyze.same_in_every_layer([l0, l1, l2], ['a', 'b', 'c']) == [(0, 'a'), (3, 'c')]


def test_concept_labels_match_words_whatever_their_case_and_spacing():
    vocab = ['the', ' Rain', 'snow', 'cat', 'rainy', 'rain']
    labels, word = analyze.concept_labels(lambda ids: ''.join(vocab[i] for i in ids), len(vocab),
                                          {'weather': ['rain', 'snow'], 'animals': ['cat']})
    assert labels.tolist() == [2, 0, 0, 1, 2, 0]
    assert word.tolist() == [0, 1, 2, 3, 4, 1]  # 'rain' is the word of ' Rain'


@pytest.mark.parametrize('site', ['resid', 'mlp'])
def test_collect_over_batches_matches_a_dense_recompute_of_every_activation(monkeypatch, site):
    """The running statistics, merged over 3 batches, against the TopK modules' whole outputs at once."""
    monkeypatch.setattr(analyze, 'batch_size', 3)
    monkeypatch.setattr(analyze, 'top_n', 5)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=16, block_size=16, vocab_size=30, topk=4, n_nontopk=1,
                          topk_site=site)).eval()
    windows = torch.randint(0, 30, (7, 16))  # 7 windows in batches of 3, 3 and 1
    m = analyze.context_skip(16)  # 8 positions of context, 8 read per window
    outs = {}
    hooks = [mod.register_forward_hook(lambda mod, i, o, l=l: outs.__setitem__(l, o)) for l, mod in topk_layers(model).items()]
    model(windows)
    for h in hooks:
        h.remove()
    stats = analyze.collect(model, windows)
    tok = windows[:, m:].reshape(-1)  # (56,)
    for layer, out in outs.items():
        act = out[:, m:].reshape(len(tok), -1)  # (56, C), every activation read
        s = stats[layer]
        assert torch.equal(s['frequency'], (act > 0).sum(0) / len(tok))
        assert torch.allclose(s['max'], act.max(0).values)
        assert torch.allclose(s['mass'], torch.zeros(30, act.size(1)).index_add_(0, tok, act), atol=1e-6)
        assert torch.allclose(s['top_v'], act.topk(5, dim=0).values)
        fired = s['top_v'] > 0  # ties at 0 may sit anywhere; a value that fired names its own position
        flat = out.reshape(-1, act.size(1))  # (7 * 16, C): positions index the windows flattened
        cols = torch.arange(act.size(1)).expand_as(s['top_p'])
        assert torch.allclose(flat[s['top_p'], cols][fired], s['top_v'][fired])
        assert torch.equal(s['top_tok'], windows.reshape(-1)[s['top_p']])
        assert (s['top_p'] % 16 >= m).all()  # never a context position


@pytest.mark.parametrize('site', ['resid', 'mlp'])
def test_promoted_tokens_are_those_a_neurons_direction_raises_most_through_ln_f_and_the_unembedding(site):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=30, topk=4, n_nontopk=1,
                          topk_site=site, bias=False)).eval()  # no c_proj bias: a direction is its column alone
    width = 64 if site == 'mlp' else 16
    with torch.no_grad():
        model.transformer.ln_f.weight.uniform_(0.5, 2.0)  # a gain that is not all ones, so it must be applied
        one_hot = torch.eye(width)  # (width, width): each neuron alone, at 1
        direction = model.transformer.h[0].mlp.c_proj(one_hot) if site == 'mlp' else one_hot  # (width, C)
        centred = direction - direction.mean(1, keepdim=True)  # as ln_f centres the residual stream
        logits = model.lm_head(centred * model.transformer.ln_f.weight)  # (width, V)
    assert torch.equal(analyze.promoted(model, 0, k=3), logits.topk(3, dim=1).indices)


def test_each_val_token_is_read_once_and_with_context(data_dir):
    T = 32
    w, m = analyze.val_windows('concepts', 1000, T, data_dir), analyze.context_skip(T)
    assert m == 8 and analyze.n_read(w) == w[:, m:].numel() and 1000 - (T - m) < analyze.n_read(w) <= 1000
    val = torch.from_numpy(open_split('concepts', 'val', data_dir)[:m + analyze.n_read(w)].astype('int64'))
    assert torch.equal(w[:, m:].reshape(-1), val[m:])  # every token once, in order
    assert torch.equal(w[1:, :m], w[:-1, -m:])  # the context of a window is the end of the one before
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=T, vocab_size=200, topk=4)).eval()
    s = analyze.collect(model, w)[0]
    assert ((s['top_p'] % T) >= m).all()  # no top activation at a position without context
    assert s['frequency'].max() <= 1 and torch.equal(s['top_tok'], w.reshape(-1)[s['top_p']])


def test_neurons_report_plots_and_json(concepts_run, data_dir, tmp_path):
    out = tmp_path / 'n.json'
    r = run('analyze.py', 'neurons', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', '--tokens=20000',
            f'--report_dir={tmp_path}', f'--json={out}')
    assert r.returncode == 0, r.stderr
    table = strict_json(out)
    row = table['neurons']['0'][0]
    assert {'frequency', 'max', 'token_entropy', 'semantic_entropy', 'best_concept', 'purity', 'top_tokens',
            'promotes', 'contexts'} <= set(row)
    live = [r for r in table['neurons']['0'] if r['frequency'] > 0]
    for r in live:  # its top contexts, strongest first, the first at its max, each with the firing token marked
        acts = [c['activation'] for c in r['contexts']]
        assert 1 <= len(acts) <= 5 and acts == sorted(acts, reverse=True) and acts[0] == r['max']
        assert all(c['context'].count('[[') == 1 for c in r['contexts'])
    report = (tmp_path / 'neurons_300.md').read_text()
    assert f"| `{live[0]['contexts'][0]['context']}` |" in report.replace('\\|', '|')
    assert table['layers']['0']['neurons'] == 64
    assert os.path.getsize(tmp_path / 'frequency_300.png') > 0 and (tmp_path / 'neurons_300.md').exists()
    # the layer's table: concept neurons first (by purity), then token detectors, a neuron's word count shown
    assert '| neuron | freq | max | tok H | concept | purity | words | sem H |' in report
    rows = [line.split(' | ') for line in report.splitlines() if line.startswith('| 0:')]
    order = [(int(cells[6]) < 3, -float(cells[5])) for cells in rows]  # (a token detector, -purity)
    assert order == sorted(order) and len(rows) == len(live) and {o[0] for o in order} == {False, True}
    # training makes neurons purer than at initialisation
    r = run('analyze.py', 'neurons', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', '--tokens=20000', '--ckpt=0',
            f'--report_dir={tmp_path}', f'--json={tmp_path}/n0.json')
    assert r.returncode == 0, r.stderr
    mean_purity = lambda t: sum(t['layers']['0']['best_purity_per_concept'].values()) / 10
    assert mean_purity(table) > mean_purity(json.loads((tmp_path / 'n0.json').read_text())) + 0.1


def test_without_a_lexicon_the_report_ranks_live_neurons_by_token_entropy(concepts_run, data_dir, tmp_path):
    shutil.copytree(os.path.join(data_dir, 'concepts'), tmp_path / 'data' / 'concepts',
                    ignore=shutil.ignore_patterns('lexicon.json'))
    r = run('analyze.py', 'neurons', f'--out_dir={concepts_run}', f'--data_dir={tmp_path / "data"}', '--tokens=5000',
            f'--report_dir={tmp_path}')
    assert r.returncode == 0, r.stderr
    rows = [line.split(' | ') for line in (tmp_path / 'neurons_300.md').read_text().splitlines() if line.startswith('| 0:')]
    entropies = [float(cells[3]) for cells in rows]  # neuron, freq, max, tok H, ...
    assert 0 < len(entropies) < 64 and entropies == sorted(entropies)  # dead neurons (NaN) left out, the rest in order


def test_a_checkpoint_path_reports_into_its_own_run(concepts_run, data_dir):
    r = run('analyze.py', 'neurons', f'--ckpt={concepts_run}/series/ckpt_0000064.pt', f'--data_dir={data_dir}',
            '--tokens=2000')  # no --out_dir: the default, out, is not this checkpoint's run
    assert r.returncode == 0, r.stderr
    report = os.path.join(concepts_run, 'analysis', 'neurons_64.md')
    assert open(report).readline() == f"# neurons of {concepts_run} at iteration 64\n"


def test_neurons_in_full(concepts_run, data_dir, tmp_path):
    out = tmp_path / 'n.json'
    r = run('analyze.py', 'neurons', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', '--tokens=5000',
            '--neuron=0:3', '--neuron=0:5,0:3', f'--json={out}', '--report_dir=' + concepts_run + '/a')
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('top contexts') == 2 and '[[' in r.stdout  # 0:3 named twice, shown once
    assert r.stdout.index('neuron 0:3 ') < r.stdout.index('neuron 0:5 ')  # in the order given
    # the full report's JSON layout, {layer: rows}, with only the neurons named
    assert {k: [n['index'] for n in v] for k, v in strict_json(out)['neurons'].items()} == {'0': [3, 5]}


def test_evolution_over_the_series(concepts_run, data_dir, tmp_path):
    out = tmp_path / 'e.json'
    r = run('analyze.py', 'evolution', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', '--tokens=5000',
            f'--report_dir={tmp_path}', f'--json={out}')
    assert r.returncode == 0, r.stderr
    result = strict_json(out)
    assert result['steps'] == [0, 1, 2, 4, 8, 16, 32, 64, 100, 128, 200, 256, 300]
    # each concept's purity curve is that concept's purity of its neuron at every step, whatever the
    # neuron's best concept was then
    model, _ = load_checkpoint(os.path.join(concepts_run, 'series', 'ckpt_0000032.pt'))
    concepts = json.load(open(os.path.join(data_dir, 'concepts', 'lexicon.json')))
    decode = get_tokenizer(load_meta('concepts', data_dir))[1]
    labels = analyze.concept_labels(decode, model.config.vocab_size, concepts)
    w = analyze.val_windows('concepts', 5000, model.config.block_size, data_dir)
    stats = analyze.collect(model.eval(), w, labels, len(concepts))
    assert result['emergence']
    for c, e in result['emergence'].items():
        want = stats[e['layer']]['concept_purity'][list(concepts).index(c), e['neuron']].item()
        assert e['purity'][result['steps'].index(32)] == pytest.approx(want)
    for name in ('loss', 'entropy', 'purity', 'stability'):
        assert os.path.getsize(tmp_path / f'evolution_{name}.png') > 0
    assert 'emergence step: the first checkpoint' in r.stdout
    assert len(result['stability']['0']) == len(result['steps']) - 1
    per_neuron = result['neurons']['0']  # per checkpoint and neuron, as the issue lists them
    for key in ('token_entropy', 'semantic_entropy', 'frequency', 'best_concept', 'purity', 'concept'):
        assert len(per_neuron[key]) == len(result['steps']) and len(per_neuron[key][0]) == 64, key


def test_layers_matrix(tmp_path, data_dir):
    src = tmp_path / 'run'
    r = run('train.py', '--dataset=concepts', f'--data_dir={data_dir}', f'--out_dir={src}', '--device=cpu',
            '--n_layer=3', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=8', '--topk=6',
            '--n_nontopk=1', '--max_iters=30', '--eval_interval=30', '--eval_iters=2', '--series=False')
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'l.json'
    r = run('analyze.py', 'layers', f'--out_dir={src}', f'--data_dir={data_dir}', '--tokens=5000',
            f'--report_dir={tmp_path}', f'--json={out}')
    assert r.returncode == 0, r.stderr
    m = json.loads(out.read_text())
    assert m['layers'] == [0, 1] and len(m['concept_agreement']) == 2 and m['top_token_jaccard'][0][0] == 1.0
    assert os.path.getsize(tmp_path / 'layers_30.png') > 0


def test_a_dense_twin_is_read_through_its_residual_coordinates(tmp_path, data_dir):
    src = tmp_path / 'dense'
    r = run('train.py', '--dataset=concepts', f'--data_dir={data_dir}', f'--out_dir={src}', '--device=cpu',
            '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=8', '--topk=0',
            '--max_iters=5', '--eval_interval=5', '--eval_iters=2', '--series=False')
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'd.json'
    r = run('analyze.py', 'neurons', f'--out_dir={src}', f'--data_dir={data_dir}', '--tokens=2000', f'--report_dir={tmp_path}',
            f'--json={out}')
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())['layers']['0']['neurons'] == 32 and 'dense (residual coordinates)' in r.stdout


def test_a_run_without_series_or_with_a_torn_checkpoint_gets_one_clear_line(tmp_path, concepts_run, data_dir):
    r = run('analyze.py', 'evolution', f'--out_dir={tmp_path}', f'--data_dir={data_dir}')
    assert r.returncode == 2 and 'no checkpoint series' in r.stderr and r.stderr.count('\n') == 1
    torn = tmp_path / 'torn'
    torn.mkdir()
    data = open(os.path.join(concepts_run, 'ckpt.pt'), 'rb').read()
    (torn / 'ckpt.pt').write_bytes(data[:len(data) // 2])
    r = run('analyze.py', 'neurons', f'--out_dir={torn}', f'--data_dir={data_dir}')
    assert r.returncode == 2 and 'cannot read checkpoint' in r.stderr and r.stderr.count('\n') == 1
    (torn / 'series').mkdir()  # evolution: a torn checkpoint in the middle of the series
    for name in ('ckpt_0000000.pt', 'ckpt_0000300.pt'):
        shutil.copy(os.path.join(concepts_run, 'series', name), torn / 'series' / name)
    first = (torn / 'series' / 'ckpt_0000000.pt').read_bytes()
    (torn / 'series' / 'ckpt_0000000.pt').write_bytes(first[:len(first) // 2])
    r = run('analyze.py', 'evolution', f'--out_dir={torn}', f'--data_dir={data_dir}', '--tokens=2000')
    last = r.stderr.strip().splitlines()[-1]  # after the progress bar, on a line of its own
    assert r.returncode == 2 and last.startswith('error: cannot read checkpoint') and 'ckpt_0000000.pt' in last, r.stderr
    r = run('analyze.py', 'neurons', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', '--neuron=1:0')
    assert r.returncode == 2 and 'the TopK layers are 0' in r.stderr
    r = run('analyze.py', 'neurons', f'--out_dir={concepts_run}', '--top_n=0')
    assert r.returncode == 2 and '--top_n and --tokens must be 1 or more' in r.stderr and r.stderr.count('\n') == 1
    twice = tmp_path / 'twice.json'
    twice.write_text(json.dumps({'weather': ['rain', 'snow', 'sun'], 'colours': ['red', 'sun']}))
    r = run('analyze.py', 'neurons', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', f'--lexicon={twice}')
    assert r.returncode == 2 and "lists 'sun' under weather and colours" in r.stderr and r.stderr.count('\n') == 1
    oov = tmp_path / 'oov.json'
    oov.write_text(json.dumps({'myths': ['dragon', 'unicorn']}))
    r = run('analyze.py', 'neurons', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', f'--lexicon={oov}')
    assert r.returncode == 2 and 'no word of the lexicon is a token of' in r.stderr and r.stderr.count('\n') == 1
    for bad in ('--purity_threshold=5', '--min_words=0'):
        r = run('analyze.py', 'neurons', f'--out_dir={concepts_run}', bad)
        assert r.returncode == 2 and '--purity_threshold is a share' in r.stderr and r.stderr.count('\n') == 1
    r = run('analyze.py', 'evolution', f'--out_dir={concepts_run}', '--ckpt=8')
    assert r.returncode == 2 and 'leave out --ckpt and --neuron' in r.stderr and r.stderr.count('\n') == 1
    r = run('analyze.py', 'layers', f'--out_dir={concepts_run}', '--neuron=0:1')
    assert r.returncode == 2 and 'with the neurons command' in r.stderr and r.stderr.count('\n') == 1
    r = run('analyze.py', 'bogus', f'--out_dir={concepts_run}')
    assert r.returncode == 2 and 'neurons, evolution or layers' in r.stderr and "not 'bogus'" in r.stderr
