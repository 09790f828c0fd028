"""
Steer generation with single TopK neurons, and measure the effect (Takahashi et al. 2025: forcing one
neuron on at layer i turns a story toward that neuron's concept).

    python steer.py --out_dir=out-concepts-topk --concept=weather            # find neurons, steer with the best
    python steer.py --out_dir=out-concepts-topk --concept=weather --sweep    # rate and perplexity vs strength
    python steer.py --out_dir=out-concepts-topk --concept=all --sweep        # every concept of the lexicon
    python steer.py --out_dir=out-concepts-topk --neuron=1:29 --scale=0.75 --words=rain,snow --start="the farmer"

Two different questions find two different lists of neurons for a concept:
- fires on: which neurons are active when the *input* token is a concept word? Ranked by purity
  (the share of the neuron's top activations on the concept's words) and by the share of its
  activation mass on them (selectivity), those whose top activations cover fewer than 3 of the
  concept's words (token detectors) last. This is what analyze.py reads.
- promotes: which neurons, forced on, raise the probability that the *next* token is a concept word?
  Each neuron is set to --search_scale times its max activation at every position of real val
  contexts, and the mean next-token probability of the concept's tokens is compared with the
  unforced model: an exact intervention, batched over neurons. Neurons are ranked by that gain
  times the concept's share of all the probability the forcing moves, so that a neuron which raises
  every noun does not win for each noun concept. In a wide layer a first-order estimate picks the
  candidates. Which neuron wins depends on the search's strength: with several (--search_scale=0.5,3
  and --sweep), each search's best neuron is swept, and the neuron is picked as the strength is.
Steering needs the second list. A neuron that fires on animal words says "an animal was just read",
and what follows an animal is rarely another animal: forced hard, it can make animals *rarer*; forced
gently, it can carry a topic on (README, Steering).

Steering is a plain forward hook on the layer's TopK module: --mode=set writes the value, add adds it,
at --positions=all, prompt or new. The strength is --value, or --scale times the neuron's largest
activation on val data; with TopK inside the MLP the defaults are larger (--scale 4, a sweep 1.5-7x), as
such a neuron steers at larger multiples of its max. Unsteered and steered samples share their random seeds, so the only
difference between the two is the neuron; concept words are *marked* in the output. The concept
rate is the share of generated words (letters, digits and apostrophes, lowercased, out of quotes; a possessive
's counts as its word) that are concept words; the fluency cost is the perplexity of the generated tokens under
the unsteered model, each with the context it was generated from, and the other tokens' -log p is their
mean over the tokens that are not the concept's: how hard the text around its words became. Distinct
bigrams (the share of distinct word pairs) show variety, which perplexity misses: it can fall for text
that repeats one likely sentence. A --sweep picks the strength with the highest rate within
--max_ppl_ratio on one draw of samples and reports that strength measured again on a second draw
(seed + 1), within the budget only if it was on both: a best of ten noisy rates is otherwise lucky.
--logit_bias adds a reference with no neuron: a constant added to the logits of the concept's tokens
while sampling. No other logit changes, so it shows how far favouring the concept alone gets within
the same perplexity budget; a neuron also moves other tokens and everything computed after it.
"""

import math
import os
import re
import textwrap
from collections import Counter
from itertools import zip_longest

import torch
import torch.nn.functional as F

import analyze
from configurator import configure, die, output_dir, output_file, write_json
from model import neuron_width, topk_layers
from prepare import WORD, get_batch, open_split
from sample import check_sampling, encode_prompt, load_run

# -----------------------------------------------------------------------------
out_dir = 'out'  # the run to steer
ckpt = ''  # '' = latest (ckpt.pt), an iteration of the series, or a checkpoint path
concept = ''  # a concept of the lexicon, or 'all' for every one
words = ''  # or the concept as comma-separated words: rain,snow,storm
lexicon = ''  # JSON concept -> words; default: the dataset's lexicon.json
neuron = []  # LAYER:INDEX to steer with, repeatable (skips the search); default: the best 'promotes' neuron
value = 0.0  # the absolute value to force (with --mode=set, 0 switches the neuron off); not given = use --scale
scale = 0.75  # strength as a multiple of the neuron's largest activation on val data (2x breaks sentences; TopK inside the MLP: 4)
# the promotes search forces each neuron gently, in the range where steering stays fluent (a sweep's best:
# 0.375-1x); at 2x, what wins is what breaks sentences. Several (0.5,3, with --sweep): one search per value,
# each search's best neuron swept, and the neuron and strength with the highest rate within the budget kept
search_scale = [0.5]  # the promotes search forces each neuron at this x its max activation (several: with --sweep)
mode = 'set'  # 'set' the neuron to the strength, or 'add' it
positions = 'all'  # steer at 'all' positions, the 'prompt' only, or the 'new' tokens only (not the first: the prompt predicts it)
start = '\n'  # the prompt; FILE:path reads it from a file
num_samples = 128  # samples per condition: rates average over them, and with fewer the baseline is noisy
max_new_tokens = 64  # tokens generated per sample
temperature = 0.8  # sampling temperature, as sample.py; 0 = greedy
top_k = 200  # sample among the top_k tokens, as sample.py; 0 = all
seed = 1337  # the same seeds serve the unsteered and the steered samples
show = 3  # samples printed side by side
top = 5  # neurons listed per search
sweep = False  # try every strength in --strengths, plot rate and perplexity against it
# the best lie at 0.375-1, where fluency starts to break
strengths = [0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.5, 2.0, 4.0]  # a sweep's --scale values (TopK inside the MLP: 1.5-7)
max_ppl_ratio = 2.0  # a sweep's best strength: the highest concept rate within this perplexity cost
logit_bias = []  # a reference with no neuron: add each of these to the logits of the concept's tokens (several: with --sweep)
contexts = 16  # val windows the promotes search forces neurons over
tokens = 100000  # val tokens that give the max activations and the 'fires on' statistics
candidates = 256  # per layer, neurons tested exactly; a wider layer is first ranked by a first-order estimate
json = ''  # write the results as JSON to this path
report_dir = ''  # where the sweep PNG goes; default out_dir/steer
device = 'auto'  # 'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'mps'
threads = 0  # CPU threads for torch; 0 keeps torch's default (one per core)
data_dir = ''  # where the run's dataset lives; '' = where it was trained from
given = set()  # the settings a config file or the command line set: --value=0 is a value, not "use --scale"
# -----------------------------------------------------------------------------

# TopK inside the MLP (topk_site='mlp'), a neuron is one of k writing into a dense residual stream through
# its own output direction: it steers at 1.5-7x its max (README, Steering), so a model of that site takes
# these defaults for --scale and --strengths unless they are given
MLP_SITE = dict(scale=4.0, strengths=[1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0])

# a word of the concept rate: a word as the word tokenizer splits it, but with a letter or digit (a lone ' is a quote)
RATE_WORD_RE = re.compile(rf"(?=['’]*[^\W_]){WORD}")
SPECIAL_RE = re.compile(r"<\|[a-z_]+\|>")  # GPT-2's <|endoftext|>: a separator, not a word


# ----------------------------------------------------------------------------- the intervention

def steering_hook(model, forced, prompt_len, positions='all', mode='set'):
    """A forward hook for one TopK module: force neurons {index: value} at the chosen positions.
    model.start_pos (set by model.generate) gives the absolute position of the first token in view, so
    the hook acts the same with and without the KV cache."""
    js = torch.tensor(list(forced))
    vs = torch.tensor(list(forced.values()))

    def hook(module, inp, out):
        T = out.size(1)
        pos = model.start_pos + torch.arange(T)
        steered = {'all': pos >= 0, 'prompt': pos < prompt_len, 'new': pos >= prompt_len}[positions]
        t = steered.nonzero().squeeze(1).to(out.device)
        if len(t) == 0:
            return out
        out = out.clone()
        rows, cols = t[:, None], js.to(out.device)[None, :]  # (t, 1) and (1, m) index (B, t, m)
        v = vs.to(out.device, out.dtype)
        out[:, rows, cols] = v if mode == 'set' else out[:, rows, cols] + v
        return out
    return hook


def steer(model, neurons, prompt_len, positions='all', mode='set'):
    """Register steering hooks for neurons {(layer, index): value}; returns the handles to remove."""
    sites = topk_layers(model)
    by_layer = {}
    for (layer, j), v in neurons.items():
        by_layer.setdefault(layer, {})[j] = v
    return [sites[layer].register_forward_hook(steering_hook(model, forced, prompt_len, positions, mode))
            for layer, forced in by_layer.items()]


def parse_neurons(specs, model):
    """['L:J', ...] -> [(L, J)], or a one-line error listing the valid TopK layers and indices."""
    return [analyze.parse_neuron(spec, list(topk_layers(model)), neuron_width(model)) for spec in specs]


# ----------------------------------------------------------------------------- finding neurons

@torch.no_grad()
def promote_search(model, x, y, concepts_ids, strength):
    """For K concepts (concepts_ids: each one's token ids), a list of K floats, the unforced mean next-token
    probability of each concept's tokens over the contexts x (n, T), and {layer: (K, C) its change, (C,) the probability
    mass the forcing moves}, each neuron set to strength[layer][j] at every position (targets y make the
    model return every position's logits). The mass moved is the total variation between the forced and
    unforced next-token distributions, averaged over positions: a concept's share of it says whether the
    neuron promotes the concept or a whole class of tokens (any noun). Exact, G neurons per forward (the
    contexts repeated G times); the forced distributions do not depend on the concept, so one pass serves all."""
    n, T = x.shape
    V = model.config.vocab_size
    p0 = F.softmax(model(x, y)[0].float(), -1)  # (n, T, V)
    mass = lambda p: torch.stack([p[..., ids].sum(-1) for ids in concepts_ids])  # (K, ...) each concept's probability
    base = mass(p0).mean((1, 2))  # (K,)
    G = max(1, min(64, int(1e8 // (n * T * V))))  # (G*n, T, V) probabilities of ~400 MB; ~3x that at the peak
    out = {}
    for layer, site in topk_layers(model).items():
        width = len(strength[layer])
        own = torch.ones(len(concepts_ids), width, dtype=torch.bool)  # (K, C) the neurons each concept ranks
        if width > candidates:  # each concept's first-order picks, forced once for all, ranked by it alone
            own.fill_(False)
            for k, ids in enumerate(concepts_ids):
                own[k, first_order(model, x, y, ids, layer, strength[layer])] = True
        own &= strength[layer] > 0  # a neuron that never fired on val data has no strength to force
        cand = own.any(0).nonzero().squeeze(1)
        delta, moved = torch.full((len(concepts_ids), width), -math.inf), torch.full((width,), math.inf)
        for g0 in range(0, len(cand), G):
            js = cand[g0:g0 + G]
            hook = site.register_forward_hook(group_hook(js, strength[layer][js], n))
            try:
                p = F.softmax(model(x.repeat(len(js), 1), y.repeat(len(js), 1))[0].float(), -1).view(len(js), n, T, V)
            finally:
                hook.remove()
            delta[:, js] = (mass(p).mean((2, 3)) - base[:, None]).cpu()
            moved[js] = (p.sub_(p0).abs_().sum(-1) / 2).mean((1, 2)).cpu()  # in place: p can be large
        out[layer] = (delta.masked_fill_(~own, -math.inf), moved)
    return base.tolist(), out


def group_hook(js, vs, n):
    """Force neuron js[g] to vs[g] at every position of the g-th copy of the n contexts."""
    def hook(module, inp, out):
        out = out.clone()
        o = out.view(len(js), n, *out.shape[1:])  # (G, n, T, C)
        o[torch.arange(len(js)), :, :, js.to(out.device)] = vs.to(out.device, out.dtype)[:, None, None]
        return out
    return hook


def first_order(model, x, y, concept_ids, layer, strength):
    """The `candidates` neurons of a wide layer whose forcing raises the concept most to first order:
    d(concept prob)/d(activation) times (strength - activation), summed over positions."""
    site = topk_layers(model)[layer]
    keep = {}

    def hook(module, inp, out):
        out.retain_grad()
        keep['out'] = out
    h = site.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits, _ = model(x, y)
            F.softmax(logits.float(), -1)[..., concept_ids].sum(-1).mean().backward()
    finally:
        h.remove()
        model.zero_grad(set_to_none=True)
    out = keep['out']
    gain = (out.grad * (strength.to(out.device) - out.detach())).sum((0, 1))  # (C,)
    return gain.topk(candidates).indices.cpu()


def promote_rank(delta, moved):
    """Rank neurons by the concept's gain times its share of the probability mass moved (delta^2/moved):
    a neuron that raises every noun gains as much for animals as an animal neuron does, but only a
    tenth of the mass it moves lands on animals, and forcing it breaks more sentences."""
    return torch.where(delta > 0, delta * delta / moved.clamp(min=1e-12), delta)


# ----------------------------------------------------------------------------- measuring

@torch.no_grad()
def generated_nll(model, seqs, first):
    """-log p of each token at positions >= first of seqs (n, T), (n, T - first), each token scored
    with the context model.generate gave it: the block_size tokens before it, or all of them."""
    B, T = model.config.block_size, seqs.size(1)
    head = seqs[:, :B + 1]  # tokens 1..B see every token before them
    logits, _ = model(head[:, :-1], head[:, 1:])
    nll = [F.cross_entropy(logits.float().transpose(1, 2), head[:, 1:], reduction='none')]  # (n, min(T, B+1) - 1)
    if T > B + 1:  # token t > B sees the window t-B .. t-1: one window per token, the last position scored
        windows = seqs.unfold(1, B, 1)[:, 1:T - B]  # (n, T-B-1, B), window s predicts token s+B
        flat = windows.reshape(-1, B)
        last = torch.cat([model(flat[i:i + 256])[0][:, -1] for i in range(0, len(flat), 256)])  # (n * (T-B-1), V)
        nll.append(F.cross_entropy(last.float(), seqs[:, B + 1:].reshape(-1), reduction='none').view(len(seqs), -1))
    return torch.cat(nll, 1)[:, first - 1:]  # targets first .. T-1


def writable(encode, word):
    """Whether the tokenizer can encode word at all: if not, the model can never generate it."""
    try:
        return bool(encode(word))
    except ValueError:
        return False


def is_concept(word, concept_words):
    """A word, lowercased and out of its quotes ('rain'), or the word before its possessive 's ("dog's"),
    is one of concept_words."""
    w = word.lower().replace('’', "'").strip("'")  # a curly apostrophe is an apostrophe
    return w in concept_words or (w.endswith("'s") and w[:-2] in concept_words)


def rate_words(text):
    """The words of a generated text, as the concept rate and the distinct bigrams count them."""
    return RATE_WORD_RE.findall(SPECIAL_RE.sub(' ', text))


def concept_rate(texts, concept_words):
    found = [w for t in texts for w in rate_words(t)]
    return sum(is_concept(w, concept_words) for w in found) / max(1, len(found))


def distinct_bigrams(texts):
    """The share of distinct word pairs over all of texts (lowercased; a pair never spans two samples): the
    distinct-2 of Li et al. 2016 as usually computed. Perplexity under the unsteered model can fall for
    text that repeats one likely sentence, so a steer is also checked for variety: this falls both for a
    sample that repeats itself and for samples that repeat each other. It also falls as samples are added
    or lengthened, so it compares runs of the same --num_samples and --max_new_tokens only."""
    pairs = []
    for t in texts:
        w = rate_words(t.lower())
        pairs += zip(w, w[1:])
    return len(set(pairs)) / max(1, len(pairs))


def scored(r, concept_words, ids):
    """A measured run with its concept rate, and the mean -log p under the unsteered model of its tokens
    that are not the concept's (ids; a word split into several tokens and other concepts' words count
    as other tokens): how hard the text around the concept words became. Perplexity mixes these with
    the concept words' own cost, and the two part ways: under the logit-bias reference the other
    tokens get easier, under a forced neuron harder (README, Steering)."""
    other = ~torch.isin(r['tokens'], ids)
    return dict(r, rate=concept_rate(r['texts'], concept_words), other_nll=r['nll'][other].mean().item())


def add_logit_bias(model, ids, b):
    """A forward hook on lm_head that adds b to the logits of the tokens ids; returns its handle."""
    bias = torch.zeros(model.lm_head.out_features, device=ids.device)
    bias[ids] = b  # (vocab,): b at the concept's tokens, 0 elsewhere
    # the logits (B, T, vocab) are biased before model.generate divides them by the temperature
    return model.lm_head.register_forward_hook(lambda m, i, out: out + bias.to(out.dtype))


def sample_steered(model, prompt, neurons, bias=None, draw=0):
    """num_samples continuations of prompt, with the neurons {(layer, j): value} forced (none: the
    unsteered model), or with bias = (token ids, b) added to those tokens' logits. The generator's
    seed is the same for every call of a draw: draw 0 for the samples a sweep picks its strength on,
    draw 1 for the new samples that measure the pick again."""
    handles = steer(model, neurons, prompt.size(1), positions, mode) if neurons else []
    if bias:
        handles.append(add_logit_bias(model, *bias))
    try:
        return model.generate(prompt.repeat(num_samples, 1), max_new_tokens, temperature=temperature,
                              top_k=top_k or None, generator=torch.Generator(device=prompt.device).manual_seed(seed + draw))
    finally:
        for h in handles:
            h.remove()


def new_text(decode, seq, P):
    """The text of seq's tokens after the first P, from the start of a word the prompt leaves unfinished:
    with a char or BPE prompt "it was r", the new tokens "ain all day" read "rain all day"."""
    head, text = decode(seq[:P]), decode(seq)
    if not text.startswith(head):  # a BPE prompt that ends inside a character's bytes
        return decode(seq[P:])
    # only a letter or digit goes on with the word: "dog" + "'s" is a finished word and a new one
    unfinished = re.search(rf"(?:{WORD})?\Z", head).group() if re.match(r"[^\W_]", text[len(head):]) else ''
    return text[len(head) - len(unfinished):]


def measure(model, prompt, neurons, decode, bias=None, draw=0):
    """Samples with the neurons forced (None: unsteered) or the logit bias, and their perplexity under
    the unsteered model."""
    seqs = sample_steered(model, prompt, neurons, bias, draw)
    P = prompt.size(1)
    nll = generated_nll(model, seqs, P)  # (n, new tokens); hooks are off: the unsteered model judges fluency
    texts = [new_text(decode, s.tolist(), P) for s in seqs]
    return dict(ppl=math.exp(nll.mean().item()), distinct=distinct_bigrams(texts), texts=texts, tokens=seqs[:, P:], nll=nll)


# ----------------------------------------------------------------------------- output

def marked(text, concept_words):
    return RATE_WORD_RE.sub(lambda m: f"*{m.group(0)}*" if is_concept(m.group(0), concept_words) else m.group(0), text)


def side_by_side(left, right, width=52):
    a = textwrap.wrap(left.replace('\n', ' / '), width) or ['']
    b = textwrap.wrap(right.replace('\n', ' / '), width) or ['']
    return '\n'.join(f"  {x:<{width}} | {y}" for x, y in zip_longest(a, b, fillvalue=''))


def show_neurons(title, rows):
    print(title)
    for r in rows:
        print(f"  {r['neuron']:>7}  {r['score']}  {r['tokens']}")


def find_neurons(stats, decode, c, name, searched):
    """Both lists for concept c, printed: 'fires on', and 'promotes' for each --search_scale (searched: the
    promote_search of every concept at each scale). Returns the 'fires on' rows, and per search scale its
    'promotes' rows and best neuron per layer."""
    fires = []
    for layer, s in stats.items():
        share = s['by_concept'][c] / s['by_concept'].sum(0).clamp(min=1e-12)
        fires += [dict(neuron=f"{layer}:{j}", layer=layer, index=j, purity=p, words=n, mass_share=sh) for j, (p, sh, n)
                  in enumerate(zip(s['concept_purity'][c].tolist(), share.tolist(), s['concept_words'][c].tolist()))]
    # analyze.py's rule first: a neuron whose top activations span fewer than min_words of the concept's
    # words is a token detector, listed after those that span enough
    fire_rows = sorted(fires, key=lambda f: (f['words'] >= analyze.min_words, f['purity'], f['mass_share']),
                       reverse=True)[:top]
    tokens_of = lambda f: ' '.join(decode([t]).replace('\n', '\\n')
                                   for t, _ in analyze.top_tokens(stats[f['layer']], f['index'], 8))
    for f in fire_rows:
        f.update(tokens=tokens_of(f),
                 score=f"purity {f['purity']:.2f} over {f['words']} words, mass share {f['mass_share']:.2f}")
    show_neurons(f"fires on {name} (purity of its top {analyze.top_n} activations and how many of the concept's words they "
                 f"cover, fewer than {analyze.min_words} listed last; share of its mass; its top tokens):", fire_rows)
    return fire_rows, [search_promotes(c, name, sc, *searched[sc], tokens_of) for sc in search_scale]


def search_promotes(c, name, sc, bases, found, tokens_of):
    """The 'promotes' list for concept c from promote_search's (bases, found) at sc x each neuron's max,
    printed with the best neuron of each layer."""
    base, found = bases[c], {layer: (d[c], m) for layer, (d, m) in found.items()}
    rank = {layer: promote_rank(d, m) for layer, (d, m) in found.items()}
    promotes = []
    for layer, (d, m) in found.items():
        promotes += [dict(neuron=f"{layer}:{j}", layer=layer, index=j, delta=dj, share=dj / max(mj, 1e-12), rank=r)
                     for j, (r, dj, mj) in enumerate(zip(rank[layer].tolist(), d.tolist(), m.tolist()))
                     if math.isfinite(dj)]  # in a wide layer only the candidates were forced
    rows = sorted(promotes, key=lambda f: f['rank'], reverse=True)[:top]
    for f in rows:
        f.update(tokens=tokens_of(f), score=f"{base:.3f} -> {base + f['delta']:.3f}, share {f['share']:.2f}")
    show_neurons(f"promotes {name} (next-token concept probability, unforced -> forced at {sc:g}x max, and the "
                 f"concept's share of the probability moved; the tokens it fires on):", rows)
    if not rows:
        die("no neuron of the TopK layers fired on the val tokens read, so none can be forced: give more --tokens")
    per_layer = {layer: int(r.argmax()) for layer, r in rank.items() if r.isfinite().any()}  # a layer none fired in: none
    # the paper's consistent neurons across layers: the index that wins in most layers (a tie: the first seen)
    index, n = Counter(per_layer.values()).most_common(1)[0]
    print("  best 'promotes' neuron per layer: " + ', '.join(f"{l}:{j}" for l, j in per_layer.items())
          + (f" (index {index} wins in {n} of {len(per_layer)} layers)" if n > 1 else ''))
    return dict(search_scale=sc, promotes=rows, best_per_layer={str(l): j for l, j in per_layer.items()},
                same_index=dict(index=index, layers=n, of=len(per_layer)))


def pick(runs, base):
    """The runs within the perplexity budget of the unsteered base, and the best: the highest concept rate
    among them (a tie: the first), or the most fluent run if none is within."""
    ok = [r for r in runs if r['ppl'] <= max_ppl_ratio * base['ppl']]
    return ok, max(ok, key=lambda r: r['rate']) if ok else min(runs, key=lambda r: r['ppl'])


def report_runs(runs, base, key, concept_words):
    """Print each run's concept rate and perplexity against the unsteered base; returns the runs within
    the perplexity budget and the best of them (the highest rate; none within: the most fluent)."""
    ok, best = pick(runs, base)
    for r in runs:
        w = any(r is o for o in ok)  # `in` would compare dicts that hold tensors
        times = f" ({r['rate'] / base['rate']:.1f}x)" if base['rate'] else ''
        rate = (f"concept rate {base['rate']:.3f} -> {r['rate']:.3f}{times}, "
                f"the other tokens' -log p {base['other_nll']:.2f} -> {r['other_nll']:.2f}, " if concept_words else '')
        print(f"  {key} {r[key]:>4g}: {rate}distinct bigrams {base['distinct']:.2f} -> {r['distinct']:.2f}, "
              f"perplexity {base['ppl']:.2f} -> {r['ppl']:.2f} ({r['ppl'] / base['ppl']:.2f}x"
              + (')' if w else f", over the {max_ppl_ratio:g}x budget)")
              + ('   <- best within the perplexity budget' if r is best and ok and len(runs) > 1 else ''))
    if len(runs) > 1 and not ok:
        print(f"  no {key} kept the perplexity within {max_ppl_ratio:g}x of the unsteered text's")
    top = max(r[key] for r in runs)
    if ok and best[key] == top and min(r[key] for r in runs) < top:  # the grid may stop short of the best
        print(f"  note: the best is the strongest {key} tried: a stronger one may raise the rate further within the budget")
    return ok, best


def without_samples(runs):
    """The runs for the JSON: everything but the samples (texts, tokens and their -log p)."""
    return [{k: v for k, v in r.items() if k not in ('texts', 'tokens', 'nll')} for r in runs]


def measure_again(again, best, picked_ok, base1, key, concept_words):
    """A sweep's pick is the best of several noisy rates, so on its own samples it looks better than it
    is: again() measures it on new samples (draw 1), against the unsteered samples base1 of the same
    draw. It is within the budget if it was on both draws (picked_ok: draw 0 had a strength within it)."""
    r = dict(best, **again())
    print(f"  {key} {r[key]:g} measured again on new samples (seed + 1), the figures reported:")
    ok, _ = report_runs([r], base1, key, concept_words)
    return r, picked_ok and bool(ok)


def run_concept(model, stats, decode, prompt, bases, ids, c, name, concept_words, searched, given_neurons):
    """Find neurons (unless given; searched: the 'promotes' search of every concept), steer and measure
    concept c (its tokens: ids) against the unsteered samples: bases holds those of draw 0 and, for a
    sweep, of draw 1 (else None). Returns the JSON-able result."""
    result = dict(concept=name)

    def run(forced=None, bias=None, draw=0):  # samples steered by the neurons {(layer, j): value} or the bias, scored
        return scored(measure(model, prompt, forced, decode, bias, draw), concept_words, ids)
    # what a sweep tries: the given neurons together, or the best 'promotes' neuron of each search scale
    searches = []
    if given_neurons:
        tried = [tuple(given_neurons)]
    else:
        result['fires_on'], searches = find_neurons(stats, decode, c, name, searched)
        best_of = lambda s: ((s['promotes'][0]['layer'], s['promotes'][0]['index']),)  # a set of one neuron
        tried = list(dict.fromkeys(best_of(s) for s in searches))  # two searches may find the same neuron
    max_act = {n: stats[n[0]]['max'][n[1]].item() for ns in tried for n in ns}
    by_value = 'value' in given  # else the strength is a --scale of each neuron's max activation
    if not by_value and any(m <= 0 for m in max_act.values()):
        die(f"neuron(s) {', '.join(f'{l}:{j}' for (l, j), m in max_act.items() if m <= 0)} never fired on the val tokens read, "
            "so --scale has nothing to scale: give --value")
    base, base1 = (scored(b, concept_words, ids) if b else None for b in bases)
    key = 'value' if by_value else 'scale'  # what the strength was given as
    forcing = lambda ns, sc: {n: value if by_value else sc * max_act[n] for n in ns}
    if by_value:
        scales = [None]
    elif sweep:
        scales = strengths
    else:
        scales = [scale]
    runs = []
    for ns in tried:
        print(f"steering {', '.join(names(ns))} ({mode}, positions={positions}) over {num_samples} samples of "
              f"{max_new_tokens} tokens:")
        mine = []
        for sc in scales:
            forced = forcing(ns, sc)
            mine.append(dict(neurons=names(ns), scale=sc, value=value if by_value else None,
                             strength=list(forced.values()), **run(forced)))
        report_runs(mine, base, key, concept_words)
        runs += mine
    ok, best = pick(runs, base)  # over every neuron tried: a neuron is picked as a strength is
    steered = next(ns for ns in tried if names(ns) == best['neurons'])
    if len(tried) > 1:
        print(f"  kept {', '.join(best['neurons'])} at {key} {best[key]:g}: of the {len(tried)} neurons' sweeps, "
              + ("the highest concept rate within the budget" if ok else "the most fluent (none kept within the budget)"))
    unsteered, picked, within = base, best, bool(ok)
    if sweep:
        unsteered = base1
        picked, within = measure_again(lambda: run(forcing(steered, best['scale']), draw=1), best, within, base1, key,
                                       concept_words)
    print(f"prompt {decode(prompt[0].tolist())!r}; unsteered | steered at {key} {best[key]:g} "
          f"(same seeds{'; concept words *marked*' if concept_words else ''}):")
    for a, b in list(zip(unsteered['texts'], picked['texts']))[:show]:
        print(side_by_side(marked(a, concept_words), marked(b, concept_words)))
        print('  ' + '-' * 100)
    if searches:  # the search that found the kept neuron (the first, if several found it)
        found = next(s for s in searches if [s['promotes'][0]['neuron']] == best['neurons'])
        result.update(found)
        if len(searches) > 1:
            result['searches'] = searches
    result.update(neurons=best['neurons'], mode=mode, positions=positions, strength=best['strength'],
                  scale=best['scale'], value=best['value'], within_budget=within, baseline_rate=unsteered['rate'],
                  steered_rate=picked['rate'], ppl_unsteered=unsteered['ppl'], ppl_steered=picked['ppl'],
                  other_nll_unsteered=unsteered['other_nll'], other_nll_steered=picked['other_nll'],
                  distinct_unsteered=unsteered['distinct'], distinct_steered=picked['distinct'], sweep=without_samples(runs),
                  sweep_baseline=dict(rate=base['rate'], ppl=base['ppl'], other_nll=base['other_nll'], distinct=base['distinct']),
                  samples=dict(unsteered=unsteered['texts'][:show], steered=picked['texts'][:show]))
    refs = []
    if logit_bias and not len(ids):
        print(f"note: no token of this vocabulary is a word of {name!r}, so there is no logit-bias reference")
    elif logit_bias:
        print(f"reference, no neuron: the bias added to the logits of the concept's {len(ids)} tokens while sampling:")
        refs = [dict(bias=b, **run(bias=(ids, b))) for b in logit_bias]
        ok_ref, best_ref = report_runs(refs, base, 'bias', concept_words)
        ok_ref = bool(ok_ref)
        if sweep:  # picked as the neuron's strength was, so measured again as it was
            best_ref, ok_ref = measure_again(lambda: run(bias=(ids, best_ref['bias']), draw=1), best_ref, ok_ref, base1,
                                             'bias', concept_words)
        result['logit_bias'] = dict(bias=best_ref['bias'], within_budget=ok_ref, rate=best_ref['rate'],
                                    ppl=best_ref['ppl'], other_nll=best_ref['other_nll'], distinct=best_ref['distinct'],
                                    sweep=without_samples(refs))
    if sweep:
        plot_sweep(name, base, runs, refs)
    return result


def names(neurons):
    """[(layer, j)] -> ['layer:j'], as the command line and the JSON write them."""
    return [f"{l}:{j}" for l, j in neurons]


def plot_sweep(name, base, runs, refs=()):
    """Left: concept rate and perplexity against strength, one line style per neuron tried. Right: the
    trade-off itself, rate against perplexity (both relative to the unsteered text), for each neuron and for
    the logit-bias reference refs if given: the gap between the curves is what a neuron moves besides its concept."""
    tried = {}  # the runs of each neuron (or set of given neurons), in the order they were swept
    for r in runs:
        tried.setdefault(', '.join(r['neurons']), []).append(r)
    relative = lambda rs: ([r['ppl'] / base['ppl'] for r in rs],
                           [r['rate'] / base['rate'] if base['rate'] else math.nan for r in rs])
    pyplot = analyze.plt()
    fig, (ax, trade) = pyplot.subplots(1, 2, figsize=(11, 3.6))
    ax2 = ax.twinx()
    for i, (label, rs) in enumerate(tried.items()):
        style, xs = ('o-', '^--', 'v-.')[i % 3], [r['scale'] for r in rs]  # a marker and a line per neuron
        ax.plot(xs, [r['rate'] for r in rs], style, color='tab:blue', label=f'concept rate, {label}')
        ax2.plot(xs, [r['ppl'] for r in rs], style, color='tab:red', label=f'perplexity, {label}')
        trade.plot(*relative(rs), style, label=label)
    ax.axhline(base['rate'], color='tab:blue', ls=':', label='concept rate (unsteered)')
    ax.set_xscale('log', base=2)
    ax.set_xlabel('strength (x max activation on val)')
    ax.set_ylabel('concept rate', color='tab:blue')
    ax2.axhline(base['ppl'], color='tab:red', ls=':')
    ax2.set_yscale('log')  # past the cliff perplexity runs to thousands; the budget's range must stay readable
    ax2.set_ylabel('perplexity under the unsteered model (log)', color='tab:red')
    ax.set_title(f"{name}: steering {' or '.join(tried)}")
    for a, where in ((ax, 'upper left'), (ax2, 'upper center')):
        a.legend(loc=where, fontsize=7)
    if refs:
        trade.plot(*relative(refs), 'x--', label='logit-bias reference')
    trade.axvline(max_ppl_ratio, color='grey', ls=':', label=f'perplexity budget ({max_ppl_ratio:g}x)')
    trade.set_xscale('log')
    trade.set_xlabel('perplexity / unsteered perplexity')
    trade.set_ylabel('concept rate / unsteered rate')
    trade.set_title('rate against fluency')
    trade.legend(fontsize=7)
    folder = report_dir or os.path.join(out_dir, 'steer')
    os.makedirs(folder, exist_ok=True)
    analyze.save_fig(fig, os.path.join(folder, f"sweep_{re.sub(r'[^A-Za-z0-9_]+', '_', name)}.png"))


def check_words(concepts, labels, encode, decode, search, named):
    """Each concept's words against the vocabulary: one line and exit when none can be counted (or, for
    the search, none is a token); a note for a word that cannot be written, that is not one token, or
    that two concepts share. named: the concepts have names (a lexicon's), not just their words."""
    # the words that are one token: every such token got a concept's label (a shared word, the later concept's)
    one_token = {decode([t]).strip().lower() for t in (labels < len(concepts)).nonzero().squeeze(1).tolist()}
    for c, (name, ws) in enumerate(concepts.items()):
        for w in ws:
            if concept_rate([w], {w}) < 1:  # 'ice-cream', 'red car', "dogs'": the rate would never count it
                die(f"the concept rate counts words of letters, digits and inner apostrophes, and {w!r} is not one: "
                    "give a phrase's words one by one (red,car)")
        never = [w for w in ws if not writable(encode, w)]  # a word tokenizer's unknown word, say
        if ws and len(never) == len(ws):
            die(f"this vocabulary cannot write any of {', '.join(ws)}, so their rate is 0 whatever is forced: "
                "give words it has (python sample.py shows its text)")
        if search and not (labels == c).any():
            die(f"no token of this vocabulary is a word of {name!r}, so no neuron can be searched for: "
                "name one with --neuron=LAYER:INDEX (analyze.py finds candidates)")
        of = f" ({name})" if named else ''
        if never:
            print(f"note: this vocabulary cannot write {', '.join(never)}{of}, so the model never generates it")
        split = [w for w in ws if w not in one_token and w not in never]
        if split:
            print(f"note: {', '.join(split)}{of}: not one token of this vocabulary: counted in the concept rate "
                  "where the model spells them, left out of the neuron search")
    for w, a, b in analyze.shared_words(concepts):
        print(f"note: {w} is a word of {a} and of {b}: counted in both rates; searched for, favoured by the logit "
              f"bias and left out of the other tokens' -log p for {b} only")


def site_defaults(model):
    """--scale and --strengths for this model: those of MLP_SITE for TopK inside the MLP, unless given."""
    if model.config.topk_site != 'mlp':
        return scale, strengths
    return (scale if 'scale' in given else MLP_SITE['scale'],
            strengths if 'strengths' in given else MLP_SITE['strengths'])


# ----------------------------------------------------------------------------- main

def main():
    global scale, strengths
    model, ck, encode, decode = load_run(out_dir, ckpt, device, data_dir, threads)
    scale, strengths = site_defaults(model)
    dev = model.lm_head.weight.device
    dataset, where = ck['config']['dataset'], ck['config']['data_dir']
    if not topk_layers(model):
        die("this model has no TopK layer to steer (topk=0, a dense model): steer a TopK model")
    given_neurons = parse_neurons(neuron, model)  # none: each concept's best 'promotes' neuron
    if positions not in ('all', 'prompt', 'new'):
        die(f"--positions takes all, prompt or new, not {positions!r}")
    if mode not in ('set', 'add'):
        die(f"--mode takes set or add, not {mode!r}")
    check_sampling(temperature, top_k)
    if words and concept:
        die("give --concept=NAME or --words=a,b,c, not both")
    if not (strengths and min(num_samples, max_new_tokens, contexts, top, candidates) >= 1):
        die("--strengths needs a value, and --num_samples, --max_new_tokens, --contexts, --top and --candidates 1 or more")
    if sweep and min(strengths) <= 0:
        die(f"a sweep takes --strengths above 0 (its plot's strength axis is logarithmic), not {','.join(map(str, strengths))}")
    if max_ppl_ratio < 1:
        die(f"--max_ppl_ratio is the perplexity cost allowed, steered over unsteered: 1 or more, not {max_ppl_ratio}")
    if show < 0:
        die(f"--show is how many sample pairs to print: 0 or more, not {show}")
    if sweep and 'value' in given:
        die("--sweep tries each of --strengths as a --scale (times the neuron's max activation): leave out --value")
    if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in logit_bias):
        die(f"--logit_bias takes numbers, as --logit_bias=2,4,6, not {','.join(map(str, logit_bias))}")
    if len(logit_bias) > 1 and not sweep:  # the best of several would be reported on the draw it was picked on
        die("several --logit_bias values are a sweep of the reference: add --sweep, or give one value")
    if not search_scale or min(search_scale) <= 0 or len(set(search_scale)) < len(search_scale):
        die("--search_scale takes one or more different strengths above 0, as --search_scale=0.5 or 0.5,3")
    if given_neurons and 'search_scale' in given:  # it would be ignored: --neuron skips the search
        die("--neuron steers the neurons you chose and skips the search that --search_scale sets: give one of them")
    if len(search_scale) > 1 and not sweep:  # as --logit_bias: a pick needs a second draw
        die("several --search_scale values are picked between by a sweep: add --sweep, or give one value")
    if sweep and temperature == 0:
        die("a sweep compares concept rates over random samples, and --temperature=0 makes every sample the same: "
            "give a temperature above 0")
    # the concepts: given as words, one or all of the lexicon, or none (steer --neuron, no measurement)
    if words:
        ws = [w.strip().lower() for w in words.split(',') if w.strip()]
        if not ws:
            die(f"--words={words} names no word: give them as --words=rain,snow,storm")
        concepts = {','.join(ws): ws}
    elif concept:
        lex = analyze.load_lexicon(lexicon, dataset, where)
        if not lex:
            die(f"no lexicon for {dataset}: give --lexicon=PATH or --words=a,b,c")
        if concept != 'all' and concept not in lex:
            die(f"unknown concept {concept!r}; the lexicon has {', '.join(lex)}")
        concepts = lex if concept == 'all' else {concept: lex[concept]}
    elif given_neurons:
        if logit_bias:
            die("--logit_bias favours a concept's tokens: give --concept=NAME or --words=a,b,c")
        concepts = {'(no concept: perplexity only)': []}
    else:
        die("give --concept=NAME (or all), --words=a,b,c, or --neuron=LAYER:INDEX")
    prompt = torch.tensor([encode_prompt(encode, start)], dtype=torch.long, device=dev)
    labels, word = analyze.concept_labels(decode, model.config.vocab_size, concepts)
    check_words(concepts, labels, encode, decode, search=not given_neurons, named=bool(concept))
    output_file(json)  # the outputs' folders are made before the work: a bad one found after it loses it
    if sweep:
        output_dir(report_dir or os.path.join(out_dir, 'steer'))
    # one pass over val tokens: max activations (for --scale) and the 'fires on' statistics
    windows = analyze.val_windows(dataset, tokens, model.config.block_size, where)
    stats = analyze.collect(model, windows, (labels, word), len(concepts))  # a TopK model's sites: its TopK layers
    ids = [(labels == c).nonzero().squeeze(1).to(dev) for c in range(len(concepts))]  # the tokens of each concept
    searched = {}  # the 'promotes' search at each --search_scale, of every concept at once
    if not given_neurons:
        x, y = get_batch(open_split(dataset, 'val', where), model.config.block_size, contexts,
                         torch.Generator().manual_seed(seed), dev)
        searched = {sc: promote_search(model, x, y, ids, {layer: s['max'] * sc for layer, s in stats.items()})
                    for sc in search_scale}
    # the unsteered samples, shared by every concept; a sweep measures its pick again on a second draw
    bases = [measure(model, prompt, None, decode), measure(model, prompt, None, decode, draw=1) if sweep else None]
    results = []
    for c, (name, concept_words) in enumerate(concepts.items()):
        print(f"\n=== {name} ===")
        results.append(run_concept(model, stats, decode, prompt, bases, ids[c], c, name, set(concept_words),
                                   searched, given_neurons))
    if len(results) > 1:
        summary(results)
    write_json(json, dict(out_dir=out_dir, checkpoint=ck.get('iter_num'), results=results))


def summary(results):
    ref = any('logit_bias' in r for r in results)  # the reference column, when --logit_bias gave one

    def ratio(rate, r):
        return f"{rate / r['baseline_rate']:.1f}x" if r['baseline_rate'] else 'no baseline'

    def same_index(r):  # the most common best index, if it wins in more than one layer
        s = r.get('same_index', dict(layers=0))
        return f"{s['index']}: {s['layers']} of {s['of']} layers" if s['layers'] > 1 else '-'

    def strength_of(r):
        return f"value {r['value']:g}" if r.get('value') is not None else f"{r['scale']:g}"

    def picked_on(r):  # a sweep's pick on the draw it was picked on, before it was measured again
        run = next(x for x in r['sweep'] if x['scale'] == r['scale'] and x['neurons'] == r['neurons'])
        b = r['sweep_baseline']
        return f" {run['rate'] / b['rate']:.1f}x |" if b['rate'] else ' no baseline |'
    print("\n| concept | neuron | baseline rate | steered rate | ratio | perplexity unsteered -> steered |"
          " the other tokens' -log p | distinct bigrams | scale |"
          + (" ratio on the draw it was picked on |" if sweep else '') + " the index that wins in most TopK layers |"
          + (" logit-bias reference: ratio (perplexity), the other tokens' -log p, distinct bigrams |" if ref else ''))
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if sweep else '') + "---|" + ("---:|" if ref else ''))
    for r in results:
        found_at = f" ({r['search_scale']:g}x search)" if 'searches' in r else ''  # several searches: which found it
        row = (f"| {r['concept']} | {', '.join(r['neurons'])}{found_at} | {r['baseline_rate']:.3f} | {r['steered_rate']:.3f} | "
               f"{ratio(r['steered_rate'], r)} | {r['ppl_unsteered']:.2f} -> {r['ppl_steered']:.2f} "
               f"({r['ppl_steered'] / r['ppl_unsteered']:.2f}x) | {r['other_nll_unsteered']:.2f} -> {r['other_nll_steered']:.2f} | "
               f"{r['distinct_unsteered']:.2f} -> {r['distinct_steered']:.2f} | {strength_of(r)} |"
               + (picked_on(r) if sweep else '') + f" {same_index(r)} |")
        if ref and 'logit_bias' not in r:  # a concept with no one-token word has no reference
            row += ' - |'
        elif ref:
            b = r['logit_bias']
            row += (f" {ratio(b['rate'], r)} ({b['ppl'] / r['ppl_unsteered']:.2f}x) at {b['bias']:+g}, "
                    f"{b['other_nll']:.2f}, {b['distinct']:.2f} |")
        print(row)

    def passed(rate, within_budget, r):  # a concept never seen unsteered has no ratio to reach
        return r['baseline_rate'] > 0 and rate >= 5 * r['baseline_rate'] and within_budget
    n = sum(passed(r['steered_rate'], r['within_budget'], r) for r in results)
    print(f"{n}/{len(results)} concepts: steered rate >= 5x baseline within a {max_ppl_ratio:g}x perplexity cost")
    if ref:
        n = sum(passed(r['logit_bias']['rate'], r['logit_bias']['within_budget'], r) for r in results if 'logit_bias' in r)
        print(f"{n}/{len(results)} with the logit-bias reference instead of a neuron")


if __name__ == '__main__':
    configure(globals(), given=given)
    torch.set_grad_enabled(False)
    main()
