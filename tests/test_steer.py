"""Claims of steer.py: the hook sets exactly the requested neurons at the requested positions, with or
without the KV cache, and forcing the best 'promotes' neuron of a trained model raises its concept."""
import json
import math
import os

import pytest
import torch

from conftest import ROOT, run, strict_json
from model import GPT, GPTConfig, topk_layers
import steer as steer_module
from steer import (add_logit_bias, concept_rate, distinct_bigrams, first_order, generated_nll, new_text,
                   promote_rank, promote_search, report_runs, sample_steered, site_defaults, steer)


def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=3, n_head=2, n_embd=32, block_size=24, vocab_size=40, topk=4, n_nontopk=1)).eval()


def record(model, layer):
    """Outputs of one TopK site, call by call. Hooks run in the order they were registered: register
    this after the steering hook to see the steered output."""
    seen = []
    handle = topk_layers(model)[layer].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    return seen, handle


@pytest.mark.parametrize('positions,mode,start', [('all', 'set', 0), ('prompt', 'set', 0), ('all', 'add', 0),
                                                  ('new', 'set', 2), ('prompt', 'add', 2)])
def test_the_hook_changes_exactly_the_requested_coordinates(positions, mode, start):
    model = tiny()
    model.start_pos = start  # the window's first absolute position, as generate() sets it
    x = torch.randint(0, 40, (2, 10))
    seen, handle = record(model, 1)
    model(x)
    handle.remove()
    handles = steer(model, {(1, 5): 7.0, (1, 9): 3.0}, prompt_len=4, positions=positions, mode=mode)
    seen2, _ = record(model, 1)
    model(x)
    before, after = seen[0], seen2[0]
    pos = start + torch.arange(10)
    in_range = {'all': pos >= 0, 'prompt': pos < 4, 'new': pos >= 4}[positions]
    assert 0 < in_range.sum() < 10 or positions == 'all'
    expect = torch.zeros_like(before, dtype=torch.bool)
    expect[:, in_range, 5] = expect[:, in_range, 9] = True
    assert torch.equal(before != after, expect)  # both neurons moved where asked, and nothing else
    for j, v in ((5, 7.0), (9, 3.0)):
        want = v if mode == 'set' else before[:, in_range, j] + v
        assert torch.allclose(after[:, in_range, j], torch.as_tensor(want).expand_as(after[:, in_range, j]))
    for h in handles:
        h.remove()


def test_neurons_of_two_layers_are_each_forced_in_their_own_layer():
    model = tiny()
    handles = steer(model, {(0, 3): 1.5, (1, 5): 7.0, (1, 9): -2.0}, prompt_len=0)
    (seen0, _), (seen1, _) = record(model, 0), record(model, 1)
    model(torch.randint(0, 40, (2, 6)))
    assert len(handles) == 2  # one hook per layer, holding that layer's neurons
    assert (seen0[0][..., 3] == 1.5).all() and (seen1[0][..., 5] == 7.0).all() and (seen1[0][..., 9] == -2.0).all()


@pytest.mark.parametrize('positions', ['all', 'prompt', 'new'])
def test_steered_greedy_generation_is_the_same_with_and_without_the_cache(positions):
    model = tiny()
    prompt = torch.randint(0, 40, (2, 6))
    handles = steer(model, {(0, 3): 2.5}, prompt_len=6, positions=positions)
    a = model.generate(prompt, 30, temperature=0, use_cache=True)  # past block_size=24 as well
    b = model.generate(prompt, 30, temperature=0, use_cache=False)
    for h in handles:
        h.remove()
    assert torch.equal(a, b)
    assert not torch.equal(a, model.generate(prompt, 30, temperature=0))  # and steering changed something


def test_positions_prompt_leaves_the_new_positions_unsteered():
    model = tiny()
    prompt = torch.randint(0, 40, (1, 5))
    steer(model, {(1, 2): 123.0}, prompt_len=5, positions='prompt')
    seen, _ = record(model, 1)
    model.generate(prompt, 6, temperature=0, use_cache=True)
    assert seen[0].shape[1] == 5 and (seen[0][0, :, 2] == 123.0).all()  # the prompt, in one pass
    assert all(s.shape[1] == 1 and s[0, 0, 2] != 123.0 for s in seen[1:])  # each new token


def test_the_promotes_search_is_the_exact_intervention_and_its_moved_mass_bounds_the_gain():
    model = tiny()
    x, y = torch.randint(0, 40, (3, 8)), torch.randint(0, 40, (3, 8))
    ids = torch.tensor([5, 6, 7])
    strength = {l: torch.full((32,), 2.0) for l in topk_layers(model)}
    (base,), found = promote_search(model, x, y, [ids], strength)
    (delta,), moved = found[1]
    p0 = torch.softmax(model(x, y)[0], -1)
    handles = steer(model, {(1, 9): 2.0}, prompt_len=0)  # the same forcing, one neuron, through the steering hook
    p = torch.softmax(model(x, y)[0], -1)
    for h in handles:
        h.remove()
    assert torch.isclose(delta[9], p[..., ids].sum(-1).mean() - base, atol=1e-5)
    assert torch.isclose(moved[9], (p - p0).abs().sum(-1).mean() / 2, atol=1e-5)  # total variation
    assert (moved >= delta.abs() - 1e-6).all()  # a set's gain is part of the mass moved
    # several concepts in one search: each gets what a search of its own gives
    other = torch.tensor([20, 30])
    bases, both = promote_search(model, x, y, [ids, other], strength)
    alone = promote_search(model, x, y, [other], strength)
    assert bases == pytest.approx([base, alone[0][0]], abs=1e-6)
    for layer, (d, m) in both.items():
        assert torch.allclose(d, torch.stack([found[layer][0][0], alone[1][layer][0][0]]), atol=1e-6)
        assert torch.allclose(m, found[layer][1], atol=1e-6)
    strength[1][4] = 0.0  # a neuron that never fired on val data: nothing to force it at, so not ranked
    assert promote_search(model, x, y, [ids], strength)[1][1][0][0, 4] == -math.inf


def test_a_layer_wider_than_candidates_forces_exactly_its_first_order_picks(monkeypatch):
    model = tiny()
    x, y = torch.randint(0, 40, (4, 12)), torch.randint(0, 40, (4, 12))
    strength = {l: torch.full((32,), 3.0) for l in topk_layers(model)}
    for ids in (torch.tensor([5, 6, 7]), torch.tensor([20, 30])):
        _, exact = promote_search(model, x, y, [ids], strength)  # 32 wide, 256 candidates: every neuron forced
        exact = {layer: (d[0], m) for layer, (d, m) in exact.items()}
        monkeypatch.setattr(steer_module, 'candidates', 8)
        _, picked = promote_search(model, x, y, [ids], strength)
        for layer, ((delta,), _) in picked.items():
            forced = torch.isfinite(delta).nonzero().squeeze(1)
            assert sorted(forced.tolist()) == sorted(first_order(model, x, y, ids, layer, strength[layer]).tolist())
            assert len(forced) == 8 and exact[layer][0].argmax().item() in forced  # the estimate keeps the exact best
            assert torch.allclose(delta[forced], exact[layer][0][forced], atol=1e-6)
        monkeypatch.setattr(steer_module, 'candidates', 256)
    # two concepts in one search: each ranks only its own picks, as searched alone, though both are forced
    monkeypatch.setattr(steer_module, 'candidates', 8)
    a, b = torch.tensor([5, 6, 7]), torch.tensor([20, 30])
    _, both = promote_search(model, x, y, [a, b], strength)
    for k, ids in enumerate((a, b)):
        _, alone = promote_search(model, x, y, [ids], strength)
        for layer, (delta, _) in both.items():
            assert torch.equal(delta[k].isfinite(), alone[layer][0][0].isfinite())
            assert torch.allclose(delta[k][delta[k].isfinite()], alone[layer][0][0][delta[k].isfinite()], atol=1e-6)


def test_the_first_order_estimate_ranks_small_pushes_as_the_exact_intervention_does(monkeypatch):
    # forced a little above its own activation, a neuron's exact gain is the gradient times that push
    model = tiny()
    x, y = torch.randint(0, 40, (1, 1)), torch.randint(0, 40, (1, 1))  # one position: one activation per neuron
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, l=l: seen.__setitem__(l, o[0, 0].detach().clone()))
             for l, m in topk_layers(model).items()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    strength = {l: a + 1e-3 for l, a in seen.items()}  # (C,) each
    ids = torch.tensor([5, 6, 7])
    _, exact = promote_search(model, x, y, [ids], strength)
    monkeypatch.setattr(steer_module, 'candidates', 32)  # every neuron, best first
    for layer, ((delta,), _) in exact.items():
        ranked = first_order(model, x, y, ids, layer, strength[layer])
        assert ranked[:4].tolist() == delta.argsort(descending=True)[:4].tolist()


def test_unsteered_and_steered_samples_share_their_seeds(monkeypatch):
    for k, v in dict(num_samples=3, max_new_tokens=12, temperature=1.0, top_k=0, mode='add').items():
        monkeypatch.setattr(steer_module, k, v)
    model, prompt = tiny(), torch.randint(0, 40, (1, 4))
    plain = sample_steered(model, prompt, None)
    assert torch.equal(sample_steered(model, prompt, {(0, 3): 0.0}), plain)  # adding 0: the same samples
    assert not torch.equal(sample_steered(model, prompt, {(0, 3): 5.0}), plain)  # the neuron is the difference
    assert not torch.equal(sample_steered(model, prompt, None, draw=1), plain)  # a second draw is new samples


def test_a_sweep_picks_the_highest_rate_within_the_perplexity_budget(monkeypatch, capsys):
    monkeypatch.setattr(steer_module, 'max_ppl_ratio', 2.0)
    base = dict(rate=0.02, ppl=3.0, other_nll=1.0, distinct=0.5)
    runs = [dict(scale=s, rate=r, ppl=p, other_nll=1.2, distinct=0.4)
            for s, r, p in [(0.5, 0.05, 4.0), (0.75, 0.12, 6.0), (1.0, 0.30, 6.1)]]
    ok, best = report_runs(runs, base, 'scale', {'rain'})
    assert [r['scale'] for r in ok] == [0.5, 0.75] and best['scale'] == 0.75  # 6.0 is at 2 x 3.0, in; 1.0 is over
    out = capsys.readouterr().out
    assert 'over the 2x budget' in out and 'the strongest scale tried' not in out
    assert 'distinct bigrams 0.50 -> 0.40' in out
    report_runs(runs[:2], base, 'scale', {'rain'})  # the best is the last strength: the grid may stop short
    assert 'note: the best is the strongest scale tried' in capsys.readouterr().out
    ok, best = report_runs(runs[1:], dict(base, ppl=2.0), 'scale', {'rain'})
    assert ok == [] and best['scale'] == 0.75  # none within: the most fluent
    twins = [dict(scale=1.0, rate=0.1, ppl=4.0, other_nll=1.2, distinct=0.4, nll=torch.ones(2, 3))
             for _ in '12']  # --strengths=1,1
    ok, best = report_runs(twins, base, 'scale', {'rain'})
    assert len(ok) == 2 and best is twins[0]


@pytest.mark.parametrize('picked_ok,ppl_again,within', [(True, 5.0, True), (True, 7.0, False), (False, 5.0, False)])
def test_a_pick_is_within_the_budget_only_if_it_was_on_both_draws(monkeypatch, picked_ok, ppl_again, within):
    # picked_ok False: no strength of draw 0 was within the budget, so the sweep fell back on the most fluent
    monkeypatch.setattr(steer_module, 'max_ppl_ratio', 2.0)
    again = lambda: dict(rate=0.3, ppl=ppl_again, other_nll=1.1, distinct=0.4)
    r, ok = steer_module.measure_again(again, dict(scale=0.5, rate=0.4, ppl=4.0), picked_ok,
                                       dict(rate=0.1, ppl=3.0, other_nll=1.0, distinct=0.5), 'scale', {'rain'})
    assert (r['scale'], r['rate'], r['ppl']) == (0.5, 0.3, ppl_again) and ok is within  # the new draw's figures


def test_a_model_with_topk_inside_the_mlp_gets_the_mlp_strengths_unless_they_are_given(monkeypatch):
    mlp = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=40, topk=8, topk_site='mlp'))
    monkeypatch.setattr(steer_module, 'given', set())
    assert site_defaults(tiny()) == (steer_module.scale, steer_module.strengths)  # the residual site's
    assert site_defaults(mlp) == (steer_module.MLP_SITE['scale'], steer_module.MLP_SITE['strengths'])
    monkeypatch.setattr(steer_module, 'given', {'strengths'})
    assert site_defaults(mlp) == (steer_module.MLP_SITE['scale'], steer_module.strengths)
    monkeypatch.setattr(steer_module, 'given', {'scale'})
    assert site_defaults(mlp) == (steer_module.scale, steer_module.MLP_SITE['strengths'])


def test_promotes_ranks_a_neuron_that_moves_only_the_concept_above_one_that_moves_a_whole_class():
    delta = torch.tensor([0.10, 0.12, 0.01, -0.02, -math.inf])  # the last: not forced (a wide layer)
    moved = torch.tensor([0.10, 0.60, 0.01, 0.30, math.inf])  # 1: the concept is a fifth of what it moves
    # gain x share: 1 gains more than 2 and keeps its place above it; share alone would not
    assert promote_rank(delta, moved).argsort(descending=True).tolist() == [0, 1, 2, 3, 4]


def test_the_logit_bias_reference_adds_b_to_the_concept_tokens_and_nothing_else():
    model = tiny()
    x = torch.randint(0, 40, (2, 7))
    before = model(x, x)[0]
    handle = add_logit_bias(model, torch.tensor([3, 11]), 2.5)
    diff = model(x, x)[0] - before
    handle.remove()
    expect = torch.zeros(40)
    expect[[3, 11]] = 2.5
    assert torch.allclose(diff, expect.expand_as(diff))


def test_generated_text_is_scored_with_the_context_it_was_generated_with():
    model = tiny()  # block_size 24: the last 15 of 40 tokens see a sliding window, as in generate()
    seqs = torch.randint(0, 40, (3, 40))
    nll = generated_nll(model, seqs, first=5)
    by_hand = torch.stack([torch.nn.functional.cross_entropy(model(seqs[:, max(0, t - 24):t])[0][:, -1], seqs[:, t],
                                                             reduction='none') for t in range(5, 40)], 1)  # (3, 35)
    assert torch.allclose(nll, by_hand, atol=1e-5)  # token by token: scored() splits them by their ids


def test_the_other_tokens_cost_leaves_out_the_concept_tokens_and_nothing_else():
    r = dict(texts=['rain, and sun'], tokens=torch.tensor([[7, 2, 3, 9]]), nll=torch.tensor([[4.0, 0.5, 1.0, 2.0]]))
    s = steer_module.scored(r, {'rain'}, torch.tensor([7]))  # token 7 is rain; the comma is a token, not a word
    assert s['rate'] == pytest.approx(1 / 3) and s['other_nll'] == pytest.approx(3.5 / 3)


def test_the_concept_rate_counts_words_not_separators_and_possessives_and_quoted_words_as_their_word():
    text = "Lily saw the rain.<|endoftext|>Tom liked the dog's 'rain'."  # 9 words, 3 of the concept
    assert concept_rate([text], {'rain', 'dog'}) == pytest.approx(3 / 9)
    assert concept_rate(["he had 2 dogs and 12 cats"], {'2', '12'}) == pytest.approx(2 / 7)  # digits are words too
    assert concept_rate(["un café, une crème_brûlée"], {'café'}) == pytest.approx(1 / 5)  # any alphabet; _ splits
    assert concept_rate(["the dog’s ‘rain’"], {'rain', 'dog'}) == pytest.approx(2 / 3)  # curly apostrophes and quotes
    assert concept_rate(["he said ' rain '"], {'rain'}) == pytest.approx(1 / 3)  # a lone quote is not a word


def test_a_word_the_prompt_leaves_unfinished_is_read_whole_in_the_new_text():
    decode, encode = lambda ids: ''.join(map(chr, ids)), lambda text: list(map(ord, text))  # a char tokenizer
    for prompt, new, read in (('it was r', 'ain all day', 'rain all day'), ('it was', ' rain', ' rain'),
                              ('a dog\n', 'rain', 'rain'), ('', 'rain', 'rain'),
                              ('the dog', "'s tail", "'s tail")):  # a finished word: "'s" does not make it new
        assert new_text(decode, encode(prompt + new), len(prompt)) == read


def test_distinct_bigrams_falls_for_text_that_repeats_itself_and_counts_no_pair_across_samples():
    varied = ["the dog saw a cat in the park .", "a red fox ran into the school ."]
    assert distinct_bigrams(varied) == 1.0  # 13 pairs ('.' is not a word), none twice
    repeated = ["ten friends sat in the car and sang . " * 4]  # 8 words over and over: 31 pairs, 8 distinct
    assert distinct_bigrams(repeated) == pytest.approx(8 / 31)
    assert distinct_bigrams(["rain snow", "Rain Snow"]) == 0.5  # lowercased; 'snow rain' spans two samples: no pair
    assert distinct_bigrams(["rain snow<|endoftext|>rain snow"]) == pytest.approx(2 / 3)  # the separator is no word
    assert distinct_bigrams(["rain", ""]) == 0.0  # no pair at all


def test_the_summary_passes_no_concept_whose_baseline_rate_is_zero(capsys, monkeypatch):
    monkeypatch.setattr(steer_module, 'sweep', True)
    row = dict(concept='zoo', neurons=['0:1'], baseline_rate=0.0, steered_rate=0.0, ppl_unsteered=3.0,
               ppl_steered=3.0, other_nll_unsteered=1.2, other_nll_steered=1.3, distinct_unsteered=0.61,
               distinct_steered=0.2, scale=1.0, within_budget=True,
               sweep=[dict(neurons=['0:1'], scale=1.0, rate=0.0)],
               sweep_baseline=dict(rate=0.0, ppl=3.0))
    steer_module.summary([row, dict(row, concept='weather', baseline_rate=0.01, steered_rate=0.06,
                                    same_index=dict(index=58, layers=2, of=3),
                                    sweep=[dict(neurons=['0:2'], scale=1.0, rate=0.5), dict(neurons=['0:1'], scale=1.0, rate=0.07)],
                                    sweep_baseline=dict(rate=0.01, ppl=3.1))])
    out = capsys.readouterr().out
    # the other tokens' -log p, the distinct bigrams, the scale, then the ratio picked on
    assert '1/2 concepts' in out and '(1.00x) | 1.20 -> 1.30 | 0.61 -> 0.20 | 1 | 7.0x | 58: 2 of 3 layers |' in out
    # a concept with no one-token word has no logit-bias reference: a dash, not the column lost for all
    bias = dict(bias=7.0, within_budget=True, rate=0.05, ppl=4.0, other_nll=1.0, distinct=0.3)
    steer_module.summary([row, dict(row, concept='weather', baseline_rate=0.01, logit_bias=bias)])
    out = capsys.readouterr().out
    assert '| - | - |' in out and '| 5.0x (1.33x) at +7, 1.00, 0.30 |' in out and '1/2 with the logit-bias' in out


def test_a_lexicon_in_capitals_counts_the_same_words(concepts_run, data_dir, tmp_path):
    words = json.loads(open(f'{data_dir}/concepts/lexicon.json').read())['weather']
    (tmp_path / 'lex.json').write_text(json.dumps({'weather': [w.capitalize() for w in words]}))
    rates = []
    for lex in ('', f'--lexicon={tmp_path / "lex.json"}'):
        out = tmp_path / f'{len(rates)}.json'
        r = run('steer.py', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', '--concept=weather', '--neuron=0:1',
                '--value=2', '--num_samples=4', '--max_new_tokens=30', '--tokens=2000', '--show=0', f'--json={out}',
                *[lex] * bool(lex))
        assert r.returncode == 0, r.stderr
        result = strict_json(out)['results'][0]
        rates.append(result['baseline_rate'])
    assert rates[0] > 0 and rates[1] == rates[0]
    # the strength is reported as it was given: a value, not the unused --scale
    assert 'value    2:' in r.stdout and 'steered at value 2' in r.stdout and 'scale' not in r.stdout
    assert result['value'] == 2 and result['scale'] is None and result['strength'] == [2]


def test_forcing_the_best_promotes_neuron_raises_its_concept(concepts_run, data_dir, tmp_path):
    out = tmp_path / 'steer.json'
    r = run('steer.py', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', '--concept=all', '--scale=2',
            '--num_samples=16', '--max_new_tokens=30', '--tokens=20000', '--show=1', f'--json={out}', '--logit_bias=4')
    assert r.returncode == 0, r.stderr
    assert 'fires on animals' in r.stdout and 'promotes animals' in r.stdout and 'unsteered | steered' in r.stdout
    results = strict_json(out)['results']
    assert len(results) == 10 and all(x['neurons'] == [x['promotes'][0]['neuron']] for x in results)  # the search's best
    ratios = [x['steered_rate'] / x['baseline_rate'] for x in results if x['baseline_rate'] > 0]
    assert max(ratios) >= 3, ratios
    assert all(set(x) >= {'concept', 'neurons', 'strength', 'baseline_rate', 'steered_rate', 'ppl_unsteered',
                          'ppl_steered', 'other_nll_unsteered', 'other_nll_steered', 'distinct_unsteered',
                          'distinct_steered', 'fires_on', 'promotes',
                          'logit_bias'} for x in results)
    assert all(x['logit_bias']['rate'] > x['baseline_rate'] for x in results)  # +4 on the logits favours every concept
    assert all(0 < x[k] <= 1 for x in results for k in ('distinct_unsteered', 'distinct_steered'))
    assert all(0 < x['logit_bias']['distinct'] <= 1 for x in results)
    for x in results:  # fires on: analyze.py's concept neurons (3 words or more) first, each group by purity
        keys = [(f['words'] >= 3, f['purity']) for f in x['fires_on']]
        assert keys == sorted(keys, reverse=True), keys
    assert 'with the logit-bias reference instead of a neuron' in r.stdout


def test_a_sweep_writes_its_plot_and_reports_its_pick_measured_on_new_samples(concepts_run, data_dir, tmp_path):
    r = run('steer.py', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', '--concept=weather', '--sweep',
            '--strengths=1,2', '--logit_bias=4', '--num_samples=4', '--max_new_tokens=10', '--tokens=5000',
            f'--report_dir={tmp_path / "plots"}', f'--json={tmp_path / "s.json"}')
    assert r.returncode == 0, r.stderr
    png = tmp_path / 'plots' / 'sweep_weather.png'
    assert png.stat().st_size > 0 and str(png) in r.stdout
    result = strict_json(tmp_path / 's.json')['results'][0]
    picked = next(x for x in result['sweep'] if x['scale'] == result['scale'])
    # the figures reported come from a second draw of samples, the unsteered ones and the logit bias's too
    assert result['ppl_steered'] != picked['ppl'] and result['ppl_unsteered'] != result['sweep_baseline']['ppl']
    assert result['logit_bias']['ppl'] != result['logit_bias']['sweep'][0]['ppl']
    assert r.stdout.count('measured again on new samples') == 2


def test_several_search_scales_sweep_each_searchs_best_neuron_and_keep_the_best_of_all(concepts_run, data_dir,
                                                                                      tmp_path):
    out = tmp_path / 'scales.json'
    r = run('steer.py', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', '--concept=all', '--sweep',
            '--search_scale=0.5,4', '--strengths=0.5,1', '--num_samples=4', '--max_new_tokens=12', '--tokens=5000',
            '--show=0', f'--report_dir={tmp_path}', f'--json={out}')
    assert r.returncode == 0, r.stderr
    disagree = 0
    for x in strict_json(out)['results']:
        assert [s['search_scale'] for s in x['searches']] == [0.5, 4.0]
        bests = [s['promotes'][0]['neuron'] for s in x['searches']]
        swept = list(dict.fromkeys(run['neurons'][0] for run in x['sweep']))
        assert swept == list(dict.fromkeys(bests))  # each search's best neuron, swept once
        disagree += len(swept) == 2
        # kept: the highest rate within the budget over every neuron's runs on draw 0 (none within: the most fluent)
        ok = [run for run in x['sweep'] if run['ppl'] <= 2 * x['sweep_baseline']['ppl']]
        want = max(ok, key=lambda run: run['rate']) if ok else min(x['sweep'], key=lambda run: run['ppl'])
        assert (x['neurons'], x['scale']) == (want['neurons'], want['scale'])
        found = x['searches'][bests.index(x['neurons'][0])]  # the search that found it is the one reported
        assert (x['search_scale'], x['promotes']) == (found['search_scale'], found['promotes'])
    # on this fixture model the two searches pick different neurons, and each search's neuron is kept for some
    # concept: without that a sweep that always kept the first search's neuron would pass
    assert disagree >= 3
    assert '(4x search) |' in r.stdout and '(0.5x search) |' in r.stdout


def test_several_searches_measure_the_kept_neuron_again_not_the_first_searchs(monkeypatch):
    for k, v in dict(sweep=True, strengths=[0.5, 1.0], search_scale=[0.5, 3.0], logit_bias=[], show=0,
                     given=set()).items():
        monkeypatch.setattr(steer_module, k, v)
    searches = [dict(search_scale=sc, promotes=[dict(neuron=f'0:{j}', layer=0, index=j)]) for sc, j in ((0.5, 1), (3.0, 2))]
    monkeypatch.setattr(steer_module, 'find_neurons', lambda *a: ([], searches))
    monkeypatch.setattr(steer_module, 'plot_sweep', lambda *a: None)
    calls = []

    def measure(model, prompt, neurons, decode, bias=None, draw=0):  # 0:2 at 1x its max writes the most rain
        calls.append((neurons, draw))
        text = 'rain rain sun' if neurons == {(0, 2): 4.0} else 'rain sun sun'
        return dict(ppl=3.0, distinct=1.0, texts=[text], tokens=torch.tensor([[1, 1]]), nll=torch.ones(1, 2))
    monkeypatch.setattr(steer_module, 'measure', measure)
    stats = {0: dict(max=torch.tensor([1.0, 2.0, 4.0]))}
    bases = [measure(None, None, None, None, draw=d) for d in (0, 1)]
    result = steer_module.run_concept(None, stats, lambda ids: '\n', torch.zeros(1, 1, dtype=torch.long), bases,
                                      torch.tensor([0]), 0, 'weather', {'rain'}, None, [])
    assert calls[-1] == ({(0, 2): 4.0}, 1)  # draw 1 forces the kept neuron at the kept strength
    assert result['neurons'] == ['0:2'] and result['scale'] == 1.0 and result['search_scale'] == 3.0
    assert result['steered_rate'] == pytest.approx(2 / 3) and result['within_budget']


def test_a_value_of_zero_is_a_value(concepts_run, data_dir, tmp_path):
    r = run('steer.py', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', '--concept=weather', '--neuron=0:1',
            '--value=0', '--num_samples=2', '--max_new_tokens=8', '--tokens=2000', '--show=0', f'--json={tmp_path / "v.json"}')
    assert r.returncode == 0, r.stderr
    result = strict_json(tmp_path / 'v.json')['results'][0]
    assert result['value'] == 0 and result['strength'] == [0] and result['scale'] is None  # switched off


@pytest.mark.parametrize('args,message', [
    (['--neuron=1:3'], 'layer 1 is not a TopK layer; the TopK layers are 0'),
    (['--neuron=0:64'], 'neuron index 64 is out of range: a TopK layer has neurons 0..63'),
    (['--neuron=zero'], 'a neuron is LAYER:INDEX'),
    (['--concept=dragons'], "unknown concept 'dragons'; the lexicon has animals"),
    (['--words=zebra,gnu'], "this vocabulary cannot write any of zebra, gnu"),
    (['--words=rain,ice-cream'], "and 'ice-cream' is not one"),  # the rate reads single words
    (['--neuron=0:1', '--words=zebra'], "this vocabulary cannot write any of zebra"),  # a rate of 0 -> 0 otherwise
    ([], 'give --concept=NAME'),
    (['--neuron=0:1', '--concept=weather', '--sweep', '--value=2'], '--sweep tries each of --strengths as a --scale'),
    (['--neuron=0:1', '--concept=weather', '--sweep', '--strengths='], '--strengths needs a value'),
    (['--neuron=0:1', '--concept=weather', '--num_samples=0'], '--num_samples, --max_new_tokens, --contexts, --top'),
    (['--concept=weather', '--top=0'], '--top and --candidates 1 or more'),
    (['--concept=weather', '--json=.'], '--json=. is a folder'),  # found before the work, not after
    (['--concept=weather', '--sweep', '--report_dir=README.md'], '--report_dir=README.md is a file'),
    (['--concept=weather', '--logit_bias=2,4'], 'several --logit_bias values are a sweep of the reference'),
    (['--concept=weather', '--sweep', '--temperature=0'], 'give a temperature above 0'),
    (['--concept=weather', '--search_scale=0.5,3'], 'several --search_scale values are picked between by a sweep'),
    (['--concept=weather', '--search_scale=0'], '--search_scale takes one or more different strengths above 0'),
    (['--concept=weather', '--sweep', '--search_scale=0.5,0.5'], '--search_scale takes one or more different'),
    (['--neuron=0:1', '--concept=weather', '--search_scale=3'], 'skips the search that --search_scale sets'),
    (['--neuron=0:1', '--words=,,'], '--words=,, names no word'),
    (['--neuron=0:1', '--concept=weather', '--sweep', '--strengths=-1,1'], 'a sweep takes --strengths above 0'),
    (['--neuron=0:1', '--concept=weather', '--max_ppl_ratio=0.5'], '--max_ppl_ratio is the perplexity cost allowed'),
    (['--neuron=0:1', '--concept=weather', '--show=-1'], '--show is how many sample pairs to print'),
])
def test_steer_mistakes_exit_2_with_one_line(concepts_run, data_dir, args, message):
    r = run('steer.py', f'--out_dir={concepts_run}', f'--data_dir={data_dir}', *args)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1, r.stderr


def test_the_shakespeare_lexicon_has_a_one_token_spelling_for_every_word_and_no_word_twice(capsys):
    """config/shakespeare_lexicon.json (README, Steering): every word is counted and searched for."""
    import analyze
    from prepare import get_tokenizer
    try:
        encode, decode = get_tokenizer({'tokenizer': 'gpt2'})
    except ValueError:
        pytest.skip('the GPT-2 tokenizer needs tiktoken files: set TIKTOKEN_CACHE_DIR (CI does)')
    concepts = analyze.load_lexicon(os.path.join(ROOT, 'config', 'shakespeare_lexicon.json'), '', '')
    labels, _ = analyze.concept_labels(decode, 50304, concepts)  # 50304: a GPT-2 BPE model's padded vocabulary
    steer_module.check_words(concepts, labels, encode, decode, search=True, named=True)
    assert len(concepts) == 6 and capsys.readouterr().out == ''  # no note: no word split, unwritable or shared


def test_a_word_two_concepts_share_is_counted_in_both_and_searched_for_the_later_with_a_note(data_dir, capsys):
    import analyze
    from prepare import get_tokenizer, load_meta
    meta = load_meta('concepts', data_dir)
    encode, decode = get_tokenizer(meta)
    concepts = {'weather': ['rain', 'snow'], 'wet': ['rain', 'river']}
    labels, _ = analyze.concept_labels(decode, meta['vocab_size'], concepts)
    steer_module.check_words(concepts, labels, encode, decode, search=True, named=True)
    assert capsys.readouterr().out == ("note: rain is a word of weather and of wet: counted in both rates; searched for, "
                                       "favoured by the logit bias and left out of the other tokens' -log p for wet only\n")
    assert labels[encode('rain')].tolist() == [1] and labels[encode('snow')].tolist() == [0]
    assert concept_rate(['rain', 'snow', 'river', 'cat'], set(concepts['weather'])) == 0.5
    assert concept_rate(['rain', 'snow', 'river', 'cat'], set(concepts['wet'])) == 0.5
