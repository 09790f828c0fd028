"""
Read a TopK LM's neurons, and trace them across training checkpoints and across layers.

    python analyze.py neurons   --out_dir=out-concepts-topk                 # one checkpoint: report, plots
    python analyze.py neurons   --out_dir=out-concepts-topk --neuron=1:37   # one neuron in full (repeatable)
    python analyze.py evolution --out_dir=out-concepts-topk                 # the checkpoint series
    python analyze.py layers    --out_dir=out-concepts-topk                 # same index, different layers

A TopK layer's hidden state is a TopK SAE latent (Takahashi et al. 2025), and its neurons are the
model's own coordinates: neuron j at step 1000 *is* neuron j at step 5000, so tracing needs no
feature matching across checkpoints, unlike post-hoc SAEs. A dense model works too (a base-LM
twin, or a nanoGPT checkpoint): its neurons are the residual-stream coordinates at the same
layers, read through their positive part.

Every statistic is computed over the same val tokens for every checkpoint (the first --tokens of
the val split after its first min_context, in windows of block_size that overlap by min_context
tokens (capped at half of block_size), so that each token is read once and with at least that many
tokens before it: a window's first positions have no context, and their activations are outliers
that would fill the top activations):
- frequency: the share of tokens on which the neuron is > 0; dead: never > 0;
- token entropy (bits): entropy of the token distribution of its activations, weighted by activation;
- with a lexicon (concept -> words): semantic entropy (bits), the same over the concepts of the
  activation mass that lands on concept words, and concept share, the part of the mass that does;
  best concept and purity: the concept most of the neuron's top_n activations land on, and that share;
  words: how many distinct words of that concept those activations cover. A concept neuron has
  purity >= purity_threshold over at least min_words words: one that fires on 'cake' alone has
  purity 1.0 for foods but is a token detector (a random init has some);
- promoted tokens: the tokens whose logits the neuron's direction raises most through the unembedding
  (the direct path only, a logit lens; steer.py measures the full effect by intervention).
"""

import json as jsonlib  # `json` is the --json=PATH setting
import math
import os

import numpy as np
import torch
from tqdm import tqdm

from configurator import configure, die, output_dir, output_file, write_json
from model import checkpoint_series, load_checkpoint, neuron_sites, neuron_width, read_metrics, record_activations
from prepare import open_split
from sample import load_run

# -----------------------------------------------------------------------------
out_dir = 'out'  # the run to analyse
ckpt = ''  # neurons/layers: '' = latest (ckpt.pt), an iteration of the series, or a path (reports go to its run)
tokens = 200000  # val tokens to read the neurons on (the same ones for every checkpoint)
min_context = 8  # each token is read with at least this many tokens before it (capped at half of block_size)
batch_size = 64  # windows per forward pass
lexicon = ''  # JSON file concept -> list of words; default: the dataset's lexicon.json if it has one
neuron = []  # neurons: L:J shows that neuron in full (several: --neuron=0:5,1:5 or --neuron=0:5 --neuron=1:5)
top_n = 100  # top activations per neuron for purity and contexts
purity_threshold = 0.9  # a neuron with purity >= this for a concept is that concept's neuron...
min_words = 3  # ...if its top activations span at least this many of the concept's words (else: a token detector)
report_dir = ''  # where the report and PNGs go; default out_dir/analysis (the JSON goes to --json)
json = ''  # also write the per-neuron table as JSON to this path
device = 'auto'  # 'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'mps'
threads = 0  # CPU threads for torch; 0 keeps torch's default (one per core)
data_dir = ''  # where the run's dataset lives; '' = where it was trained from
# -----------------------------------------------------------------------------

N_TOP_TOKENS = 10  # top tokens shown per neuron
N_JACCARD = 20  # top tokens compared between checkpoints and layers
N_CONTEXTS = 5  # top contexts per neuron (JSON and the full neuron view; the report's table shows the first)


# ----------------------------------------------------------------------------- inputs

def load_lexicon(path, dataset, data_dir):
    """{concept: [words]} from --lexicon, else the dataset's own lexicon.json, else None."""
    if not path:
        path = os.path.join(data_dir, dataset, 'lexicon.json')
        if not os.path.exists(path):
            return None
    try:
        with open(path) as f:
            lex = jsonlib.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read lexicon {path}: {e}")
    if not (isinstance(lex, dict) and lex and all(isinstance(w, list) and all(isinstance(x, str) for x in w) for w in lex.values())):
        die(f"lexicon {path} must be a JSON object of concept -> list of words")
    return {c: [w.lower() for w in ws] for c, ws in lex.items()}  # words are matched lowercased everywhere


def shared_words(lex):
    """[(word, concept, later concept)]: each word the lexicon lists under two concepts; concept_labels
    gives its tokens to the later one."""
    owner, shared = {}, []
    for c, words in lex.items():
        for w in words:
            if owner.get(w, c) != c:
                shared.append((w, owner[w], c))
            owner[w] = c
    return shared


def concept_labels(decode, vocab_size, lex):
    """(vocab_size,) long each: every token id's concept index, or len(lex) for a token of no
    concept; and its word, as the first token id with the same text. A token belongs to a concept
    when its text, stripped and lowercased, is one of the concept's words, so ' Rain' and 'rain' are
    both the word rain under GPT-2's BPE. A word that BPE splits counts only where one token is the
    whole word ('crown' in ' crowns' counts: a concept rate counts whole words of the text instead)."""
    word_concept = {w.lower(): c for c, words in enumerate(lex.values()) for w in words}
    labels = torch.full((vocab_size,), len(lex), dtype=torch.long)
    word, first = torch.arange(vocab_size), {}
    for t in range(vocab_size):
        text = decode([t]).strip().lower()
        word[t] = first.setdefault(text, t)
        c = word_concept.get(text)
        if c is not None:
            labels[t] = c
    return labels, word


def context_skip(block_size):
    """How many first positions of each window are context only, never read (min_context, capped)."""
    return min(min_context, block_size // 2)


def n_read(windows):
    """How many tokens of the windows are read: all but each window's first context_skip."""
    return len(windows) * (windows.size(1) - context_skip(windows.size(1)))


def val_windows(dataset, n_tokens, block_size, data_dir):
    """(N, block_size) windows of the val split, each starting context_skip tokens before the previous
    one ends: past the first context_skip, up to n_tokens are each read once, with that much context.
    The same windows serve every checkpoint."""
    m = context_skip(block_size)
    data = open_split(dataset, 'val', data_dir)
    n = (min(n_tokens + m, len(data)) - m) // (block_size - m)
    if n <= 0:
        die(f"the val split of {dataset} ({len(data):,} tokens) or --tokens={n_tokens} holds less than one window "
            f"({block_size - m} tokens read, {m} of context): read more --tokens")
    return torch.from_numpy(data[:m + n * (block_size - m)].astype(np.int64)).unfold(0, block_size, block_size - m)


def parse_neuron(spec, layers, width, kind='TopK'):
    """'L:J' -> (L, J), or a one-line error that lists the valid layers and indices."""
    try:
        layer, j = map(int, str(spec).split(':'))
    except ValueError:
        die(f"a neuron is LAYER:INDEX, like 1:37, not {spec!r}")
    if layer not in layers:
        die(f"layer {layer} is not a {kind} layer; the {kind} layers are {', '.join(map(str, layers))}")
    if not 0 <= j < width:
        die(f"neuron index {j} is out of range: a {kind} layer has neurons 0..{width - 1}")
    return layer, j


# ----------------------------------------------------------------------------- statistics

@torch.no_grad()
def collect(model, windows, labels=None, n_concepts=0, progress=False):
    """One batched pass over windows; per neuron site, the running statistics every view is built
    from: firing counts, max activation, activation mass per token id (V, C), and the top_n
    activations with their positions; with labels (concept_labels' pair), the concept statistics.
    Activations arrive sparse (values, indices) from TopK sites."""
    sites, width = neuron_sites(model), neuron_width(model)
    V, device = model.config.vocab_size, next(model.parameters()).device
    T = windows.size(1)
    m = context_skip(T)  # the first m positions of a window are context only (val_windows)
    stats = {}
    batches = range(0, len(windows), batch_size)
    for b in tqdm(batches, desc='activations', leave=False, disable=not progress):
        x = windows[b:b + batch_size].to(device)
        tok = x[:, m:].reshape(-1)  # (N,) the tokens read
        rows, cols = torch.arange(b, b + len(x), device=x.device), torch.arange(m, T, device=x.device)
        pos = (rows[:, None] * T + cols).view(-1)  # (N,) their positions in windows flattened
        acts = record_activations(model, x, sites)
        for layer, (vals, idx) in acts.items():
            vals, idx = vals[:, m:], None if idx is None else idx[:, m:]
            N = tok.numel()
            if idx is None:  # a dense site: its positive part
                act = vals.reshape(N, -1).float().clamp(min=0)
            else:  # densified per batch only, to add into the (V, C) mass and the running top_n
                act = torch.zeros(N, width, device=x.device).scatter_(1, idx.reshape(N, -1), vals.reshape(N, -1).float())
            C = act.size(1)
            s = stats.setdefault(layer, dict(count=torch.zeros(C, device=x.device), max=torch.zeros(C, device=x.device),
                                             mass=torch.zeros(V, C, device=x.device), top_v=None, top_p=None))
            s['count'] += (act > 0).sum(0)
            s['max'] = torch.maximum(s['max'], act.max(0).values)
            s['mass'].index_add_(0, tok, act)
            v = act if s['top_v'] is None else torch.cat([s['top_v'], act])
            p = pos[:, None].expand(N, C)
            p = p if s['top_p'] is None else torch.cat([s['top_p'], p])
            s['top_v'], i = v.topk(min(top_n, len(v)), dim=0)  # (top_n, C)
            s['top_p'] = p.gather(0, i)
    n_tokens = n_read(windows)
    flat = windows.reshape(-1).to(device)
    out = {}
    for layer, s in stats.items():
        mass = s['mass']
        r = dict(frequency=(s['count'] / n_tokens).cpu(), max=s['max'].cpu(), mass=mass.cpu(),
                 token_entropy=entropy_bits(mass).cpu(), top_v=s['top_v'].cpu(), top_p=s['top_p'].cpu(),
                 top_tok=flat[s['top_p']].cpu())  # top_*: (top_n, C) values, positions, token ids
        if labels is not None:
            concept, word = labels
            r['by_concept'] = by_concept = torch.zeros(n_concepts + 1, mass.size(1)).index_add_(0, concept, mass.cpu())
            r['concept_share'] = by_concept[:n_concepts].sum(0) / by_concept.sum(0).clamp(min=1e-12)
            r['semantic_entropy'] = entropy_bits(by_concept[:n_concepts])
            (r['concept_purity'], r['best'], r['purity'], r['words'],
             r['concept_words']) = purity(r['top_v'], r['top_tok'], concept, word, n_concepts)
        out[layer] = r
    return out


def entropy_bits(mass):
    """Entropy in bits of each column of a non-negative (K, C) matrix, taken as a distribution over
    its K rows; NaN for an empty column (a dead neuron, or one with no concept mass)."""
    total = mass.sum(0, keepdim=True)
    p = mass / total
    h = -(p * torch.log2(p)).nan_to_num(0.0).sum(0) + 0.0  # + 0.0 turns a one-token neuron's -0.0 into 0.0
    return torch.where(total[0] > 0, h, torch.full_like(h, math.nan))


def purity(top_v, top_tok, labels, word, n_concepts):
    """Per neuron, over its top activations that are > 0: the share on each concept's words
    (n_concepts, C), the best concept (-1 for none), its share (the purity), how many distinct words
    of it they are (' Rain' and 'rain' are one word: `word` from concept_labels), and that count for
    every concept (n_concepts, C)."""
    fired = top_v > 0  # (top_n, C)
    # float64: 90 of 100 is then exactly 0.9, at the threshold in tensor and float comparisons (float32: 0.8999...)
    counts = torch.zeros(n_concepts + 1, top_v.size(1), dtype=torch.float64)
    counts = counts.scatter_add_(0, labels[top_tok], fired.double())[:n_concepts]
    share = counts / fired.sum(0).clamp(min=1)
    best_purity, best = share.max(0)
    best[best_purity == 0] = -1
    # (V, C): the words each neuron fired on, each word at its first token id
    seen = torch.zeros(len(labels), top_v.size(1)).scatter_reduce_(0, word[top_tok], fired.float(), 'amax')
    concept_words = torch.zeros(n_concepts + 1, top_v.size(1)).index_add_(0, labels, seen)[:n_concepts].long()
    words = concept_words.gather(0, best.clamp(min=0)[None])[0] * (best >= 0)
    return share, best, best_purity, words, concept_words


def concept_of(s):
    """(C,) the concept index each neuron is a concept neuron of (purity and breadth), else -1."""
    ok = (s['purity'] >= purity_threshold) & (s['words'] >= min_words)
    return torch.where(ok, s['best'], torch.full_like(s['best'], -1))


def top_tokens(stats, j, n=N_TOP_TOKENS):
    """[(token id, count)]: the distinct tokens of neuron j's top_n activations (those > 0), most
    frequent first. These are the tokens purity is measured on."""
    fired = stats['top_tok'][:, j][stats['top_v'][:, j] > 0]
    ids, counts = fired.unique(return_counts=True)
    order = counts.argsort(descending=True, stable=True)[:n]
    return list(zip(ids[order].tolist(), counts[order].tolist()))


def top_token_sets(stats, n=N_JACCARD):
    """(C, n) ids of each neuron's top tokens (-1 pads a neuron with fewer): what Jaccard compares."""
    C = stats['top_tok'].size(1)
    out = torch.full((C, n), -1, dtype=torch.long)
    for j in range(C):
        ids = [t for t, _ in top_tokens(stats, j, n)]
        out[j, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def jaccard(a, b):
    """Row-wise Jaccard of two (C, n) id sets, ignoring -1; NaN where both are empty."""
    out = []
    for x, y in zip(a.tolist(), b.tolist()):
        x, y = set(x) - {-1}, set(y) - {-1}
        out.append(len(x & y) / len(x | y) if x | y else math.nan)
    return torch.tensor(out)


def promoted(model, layer, k=N_TOP_TOKENS):
    """(C, k) token ids each neuron's direction raises most on the direct path: through ln_f's centering
    and gain (its scaling depends on the whole residual stream, so it is left out) and the unembedding.
    A residual-stream neuron's direction is its own coordinate; an MLP neuron's is its c_proj column."""
    block = model.transformer.h[layer]
    W_U = model.lm_head.weight * model.transformer.ln_f.weight  # (V, C)
    W_U = W_U - W_U.mean(1, keepdim=True)  # ln_f first subtracts the mean over C: W_U @ (d - mean(d))
    with torch.no_grad():
        effect = W_U @ block.mlp.c_proj.weight if hasattr(block.mlp, 'topk') else W_U  # (V, width)
        return effect.topk(k, dim=0).indices.T


def concept_neurons(stats, concepts):
    """{concept: (layer, neuron, purity)}: the purest neuron of each concept over all layers, among
    neurons whose top activations cover at least min_words of its words."""
    best = {}
    for layer, s in stats.items():
        for j, (c, p, w) in enumerate(zip(s['best'].tolist(), s['purity'].tolist(), s['words'].tolist())):
            if c >= 0 and w >= min_words and p > best.get(concepts[c], (0, 0, -1))[2]:
                best[concepts[c]] = (layer, j, p)
    return best


# ----------------------------------------------------------------------------- plots

def plt():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot
    return matplotlib.pyplot


def save_fig(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt().close(fig)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- neurons

def context(decode, windows, pos, before=12, after=4):
    """The text around position pos (of windows flattened) with the firing token marked [[like this]],
    from its own window only: what the model saw, and what came next. Decoding growing prefixes keeps
    the tokenizer's own spacing around the marked token."""
    w, t = divmod(pos, windows.size(1))
    ids = windows[w, max(0, t - before):t + 1 + after].tolist()
    p = min(t, before)
    left, upto, full = decode(ids[:p]), decode(ids[:p + 1]), decode(ids)
    tok = upto[len(left):]
    space = tok[:len(tok) - len(tok.lstrip())] if tok.strip() else ''
    return f"{left}{space}[[{tok[len(space):]}]]{full[len(upto):]}".replace('\n', '\\n')


def neuron_rows(stats, layer, decode, concepts, promote, windows):
    s = stats[layer]
    rows = []
    for j in range(len(s['frequency'])):
        row = dict(index=j, frequency=s['frequency'][j].item(), max=s['max'][j].item(),
                   token_entropy=s['token_entropy'][j].item(),
                   top_tokens=[decode([t]) for t, _ in top_tokens(s, j)],
                   promotes=[decode([t]) for t in promote[j].tolist()],
                   contexts=[dict(activation=v, context=context(decode, windows, p)) for v, p in
                             zip(s['top_v'][:N_CONTEXTS, j].tolist(), s['top_p'][:N_CONTEXTS, j].tolist()) if v > 0])
        if concepts:
            c = s['best'][j].item()
            row.update(semantic_entropy=s['semantic_entropy'][j].item(), concept_share=s['concept_share'][j].item(),
                       best_concept=concepts[c] if c >= 0 else None, purity=s['purity'][j].item(),
                       words=s['words'][j].item())
        rows.append(row)
    return rows


def layer_summary(stats, concepts):
    out = {}
    for layer, s in stats.items():
        alive = s['frequency'] > 0
        row = dict(neurons=len(alive), dead=int((~alive).sum()),
                   mean_token_entropy=nanmean(s['token_entropy'][alive]))
        if concepts:
            row['mean_semantic_entropy'] = nanmean(s['semantic_entropy'][alive])
            best = concept_neurons({layer: s}, concepts)
            row['best_purity_per_concept'] = {c: best[c][2] if c in best else 0.0 for c in concepts}
            row['concepts_at_threshold'] = sum(p >= purity_threshold for p in row['best_purity_per_concept'].values())
            row['concept_neurons'] = int((concept_of(s) >= 0).sum())
        out[layer] = row
    return out


def nanmean(t):
    t = t[~torch.isnan(t)]
    return t.mean().item() if len(t) else math.nan


def cmd_neurons():
    model, ck, lex, labels, windows, decode = setup(ckpt)
    concepts = list(lex) if lex else []
    kind = 'TopK' if model.config.topk else 'neuron'
    chosen = dict.fromkeys(parse_neuron(spec, list(neuron_sites(model)), neuron_width(model), kind)
                           for spec in neuron)  # checked before the pass over the data; a neuron named twice shown once
    stats = collect(model, windows, labels, len(concepts), progress=True)
    if chosen:
        rows = {layer: neuron_rows(stats, layer, decode, concepts, promoted(model, layer), windows)
                for layer in dict.fromkeys(l for l, _ in chosen)}  # each layer's rows once
        shown = {}  # {layer: [rows]}, as the full report's JSON holds them
        for layer, j in chosen:
            row = rows[layer][j]
            print(f"neuron {layer}:{j} at iteration {ck.get('iter_num')} over {n_read(windows):,} val tokens")
            for k, v in row.items():
                if k not in ('top_tokens', 'promotes', 'index', 'contexts'):
                    print(f"  {k:<17} {v:.4f}" if isinstance(v, float) else f"  {k:<17} {v}")
            print(f"  top tokens       (of its top {top_n} activations, those above 0) "
                  + ', '.join(f"{decode([t])!r} x{c}" for t, c in top_tokens(stats[layer], j)))
            print("  promotes         " + show_words(row['promotes']))
            print("  top contexts:")
            for c in row['contexts']:
                print(f"    {c['activation']:7.3f}  {c['context']}")
            shown.setdefault(str(layer), []).append(row)
        write_json(json, dict(checkpoint=ck.get('iter_num'), tokens=n_read(windows), neurons=shown))
        return
    summary = layer_summary(stats, concepts)
    table = {layer: neuron_rows(stats, layer, decode, concepts, promoted(model, layer), windows) for layer in stats}
    best = concept_neurons(stats, concepts) if lex else {}
    lines = [f"# neurons of {out_dir} at iteration {ck.get('iter_num')}", '',
             f"{n_read(windows):,} val tokens; {'TopK' if model.config.topk else 'dense (residual coordinates)'} "
             f"sites at layers {list(stats)}; purity over the top {top_n} activations", '']
    for layer, row in summary.items():
        line = f"- layer {layer}: {row['neurons']} neurons, {row['dead']} dead, mean token entropy {row['mean_token_entropy']:.2f} bits"
        if concepts:
            line += (f", mean semantic entropy {row['mean_semantic_entropy']:.2f} bits, concepts with a neuron of purity "
                     f">= {purity_threshold}: {row['concepts_at_threshold']}/{len(concepts)}")
        lines.append(line)
    if best:
        purities = [best.get(c, (0, 0, 0.0))[2] for c in concepts]
        lines += ['', f"best neuron per concept (any layer): mean purity {np.mean(purities):.3f}, "
                      f"{sum(p >= purity_threshold for p in purities)}/{len(concepts)} concepts >= {purity_threshold}", '',
                  '| concept | neuron | purity | top tokens |', '|---|---|---:|---|']
        for c in concepts:
            if c in best:
                layer, j, p = best[c]
                lines.append(f"| {c} | {layer}:{j} | {p:.2f} | {show_words(table[layer][j]['top_tokens'][:6])} |")
            else:
                lines.append(f"| {c} | none | 0.00 | |")
    head = len(lines)  # stdout gets the summary; the report also gets every layer's table
    for layer, rows in table.items():
        lines += ['', f"## layer {layer}", '', '| neuron | freq | max | tok H | ' + ('concept | purity | words | sem H | ' if concepts else '')
                  + 'top tokens | promotes | top context |',
                  '|---|---:|---:|---:|' + ('---|---:|---:|---:|' if concepts else '') + '---|---|---|']
        alive = [r for r in rows if r['frequency'] > 0]  # a dead neuron's entropy is NaN, which breaks a sort
        # with a lexicon, by purity: first those whose top activations span min_words of their concept's words,
        # then token detectors and neurons with no concept
        by_purity = lambda r: (r['words'] < min_words, -(r['purity'] or 0))
        for r in sorted(alive, key=by_purity if concepts else lambda r: r['token_entropy']):
            cells = [f"{layer}:{r['index']}", f"{r['frequency']:.4f}", f"{r['max']:.2f}", f"{r['token_entropy']:.2f}"]
            if concepts:
                h = r['semantic_entropy']  # NaN: no activation mass on concept words
                cells += [r['best_concept'] or '-', f"{r['purity']:.2f}", str(r['words']), '-' if math.isnan(h) else f"{h:.2f}"]
            top = r['contexts'][0]['context'].replace('|', '\\|') if r['contexts'] else ''  # '|' would end the cell
            cells += [show_words(r['top_tokens'][:6]), show_words(r['promotes'][:6]), f"`{top}`"]
            lines.append('| ' + ' | '.join(cells) + ' |')
    report = os.path.join(reports(), f"neurons_{ck.get('iter_num')}.md")
    with open(report, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines[:head]))
    print(f"wrote {report}")
    # the activation-frequency histogram per layer, log scale, dead neurons counted apart
    pyplot = plt()
    fig, axes = pyplot.subplots(1, len(stats), figsize=(4 * len(stats), 3.2), squeeze=False)
    for ax, (layer, s) in zip(axes[0], stats.items()):
        f = s['frequency'][s['frequency'] > 0]
        ax.hist(torch.log10(f).numpy(), bins=30, color='tab:blue')
        ax.set_title(f"layer {layer}: {summary[layer]['dead']} dead")
        ax.set_xlabel('log10 activation frequency')
    axes[0][0].set_ylabel('neurons')
    save_fig(fig, os.path.join(reports(), f"frequency_{ck.get('iter_num')}.png"))
    write_json(json, dict(checkpoint=ck.get('iter_num'), tokens=n_read(windows), layers=summary,
                    concept_neurons={c: dict(layer=l, neuron=j, purity=p) for c, (l, j, p) in best.items()},
                    neurons={str(k): v for k, v in table.items()}))


def show_words(words):
    return ' '.join(repr(w)[1:-1].replace('|', '\\|').replace(' ', '␣') for w in words)


# ----------------------------------------------------------------------------- evolution

def emergence_step(steps, held):
    """The first step from which `held` (the neuron is the concept's neuron) stays true through the
    last checkpoint; None if it does not hold at the last one."""
    step = None
    for s, h in zip(reversed(steps), reversed(held)):
        if not h:
            break
        step = s
    return step


def track_concepts(per_ckpt, steps, concepts):
    """{concept: dict(layer, neuron, purity, step)}: each concept's neuron followed through the series.
    Of the concept's neurons at the last checkpoint, the one that became it first is followed (its step is
    when the concept got a stable neuron); a tie goes to the purest at the end, then the lowest layer and
    index. A concept with no neuron at the end is followed through its purest neuron there (step None).
    purity is the concept's purity of that neuron at each checkpoint, whatever its best concept was then."""
    last, purest, out = per_ckpt[-1], concept_neurons(per_ckpt[-1], concepts), {}
    for ci, c in enumerate(concepts):
        found = [(l, j) for l in last for j in (last[l]['concept'] == ci).nonzero().flatten().tolist()]
        candidates = []
        for l, j in found or ([purest[c][:2]] if c in purest else []):
            held = [d[l]['concept'][j].item() == ci for d in per_ckpt]
            candidates.append(dict(layer=l, neuron=j, purity=[d[l]['concept_purity'][ci, j].item() for d in per_ckpt],
                             step=emergence_step(steps, held)))
        if candidates:
            out[c] = min(candidates, key=lambda r: (r['step'] is None, r['step'] or 0, -r['purity'][-1]))
    return out


def cmd_evolution():
    series = checkpoint_series(out_dir)
    if len(series) < 2:
        die(f"no checkpoint series in {out_dir}/series/ (evolution needs two checkpoints or more): "
            "train with series=True, the default")
    model, ck, lex, labels, windows, decode = setup(series[-1][1])
    concepts = list(lex) if lex else []
    steps, per_ckpt = [], []
    bar = tqdm(series, desc='checkpoints')
    for it, path in bar:
        try:
            m = load_checkpoint(path, model.lm_head.weight.device)[0]
        except ValueError as e:
            bar.close()  # the error on a line of its own, not after the bar
            die(str(e))
        stats = collect(m, windows, labels, len(concepts))
        # keep the per-neuron numbers (and each concept's purity), drop the (V, C) mass and the top_n tables
        per_ckpt.append({layer: dict({k: v for k, v in s.items() if k not in ('mass', 'by_concept', 'top_v', 'top_p', 'top_tok')},
                                     concept=concept_of(s) if lex else None, top=top_token_sets(s))
                         for layer, s in stats.items()})
        steps.append(it)
    layers = list(per_ckpt[0])
    emerged = track_concepts(per_ckpt, steps, concepts) if lex else {}
    stability = {layer: [nanmean(jaccard(a[layer]['top'], b[layer]['top'])) for a, b in zip(per_ckpt, per_ckpt[1:])]
                 for layer in layers}
    mean_curve = lambda key: {layer: [nanmean(d[layer][key][d[layer]['frequency'] > 0]) for d in per_ckpt] for layer in layers}
    token_h = mean_curve('token_entropy')
    sem_h = mean_curve('semantic_entropy') if lex else {}

    print(f"emergence step: the first checkpoint from which a neuron stays its concept's neuron (best concept "
          f"unchanged, purity >= {purity_threshold}, >= {min_words} of its words) through the last checkpoint ({steps[-1]})")
    for c, e in sorted(emerged.items(), key=lambda ce: (ce[1]['step'] is None, ce[1]['step'] or 0, ce[0])):
        print(f"  {c:<12} neuron {e['layer']}:{e['neuron']:<4} final purity {e['purity'][-1]:.2f}, emerged at "
              f"{e['step'] if e['step'] is not None else 'never (below the threshold at the end)'}")
    for layer in layers:
        print(f"  layer {layer}: mean token entropy {token_h[layer][0]:.2f} -> {token_h[layer][-1]:.2f} bits"
              + (f", semantic {sem_h[layer][0]:.2f} -> {sem_h[layer][-1]:.2f}" if lex else '')
              + f", top-token Jaccard between consecutive checkpoints {stability[layer][0]:.2f} -> {stability[layer][-1]:.2f}")

    pyplot = plt()
    # 1. the loss curve with checkpoints and emergence steps (the paper's checkpoint-wise view)
    rows = read_metrics(out_dir)
    fig, ax = pyplot.subplots(figsize=(8, 4))
    tr = [(r['iter'], r['loss']) for r in rows if r['kind'] == 'train']
    ev = [(r['iter'], r['val_loss']) for r in rows if r['kind'] == 'eval']
    if tr:
        ax.plot(*zip(*tr), lw=0.8, color='tab:blue', label='train loss')
    if ev:
        ax.plot(*zip(*ev), 'o-', ms=3, color='tab:orange', label='val loss')
    for s in steps:
        ax.axvline(s, color='0.85', lw=0.6, zorder=0)
    for i, (c, e) in enumerate(sorted((c, e) for c, e in emerged.items() if e['step'] is not None)):
        ax.axvline(e['step'], color=f"C{i % 10}", ls='--', lw=1)
        ax.text(e['step'], 0.92 - 0.06 * (i % 12), c, transform=ax.get_xaxis_transform(), fontsize=7, color=f"C{i % 10}")
    steps_axis(ax)
    ax.set_xlabel('iteration (grey: checkpoints, dashed: concept neuron emerges)')
    ax.set_ylabel('loss')
    ax.legend(loc='lower left')
    save_fig(fig, os.path.join(reports(), 'evolution_loss.png'))
    # 2. token entropy: neurons x checkpoints per layer, and the mean curves
    fig, axes = pyplot.subplots(2, len(layers), figsize=(4 * len(layers), 6.5), squeeze=False)
    for col, layer in enumerate(layers):
        H = torch.stack([d[layer]['token_entropy'] for d in per_ckpt], 1)  # (C, checkpoints)
        order = torch.argsort(torch.nan_to_num(H[:, -1], nan=1e9))
        im = axes[0][col].imshow(H[order].numpy(), aspect='auto', cmap='viridis', interpolation='nearest')
        axes[0][col].set_xticks(range(len(steps)), [str(s) for s in steps], rotation=90, fontsize=6)
        axes[0][col].set_title(f"layer {layer}: token entropy (bits)")
        axes[0][col].set_ylabel('neuron (sorted by final entropy)')
        fig.colorbar(im, ax=axes[0][col])
        axes[1][col].plot(steps, token_h[layer], 'o-', ms=3, label='token entropy')
        if lex:
            axes[1][col].plot(steps, sem_h[layer], 's-', ms=3, label='semantic entropy')
        steps_axis(axes[1][col])
        axes[1][col].set_xlabel('iteration')
        axes[1][col].set_ylabel('mean over live neurons (bits)')
        axes[1][col].legend(fontsize=7)
    save_fig(fig, os.path.join(reports(), 'evolution_entropy.png'))
    # 3. purity of each concept's neuron over the checkpoints
    if emerged:
        fig, ax = pyplot.subplots(figsize=(8, 4))
        for i, (c, e) in enumerate(sorted(emerged.items())):
            ax.plot(steps, e['purity'], 'o-', ms=3, color=f"C{i % 10}", label=f"{c} ({e['layer']}:{e['neuron']})")
        ax.axhline(purity_threshold, color='k', ls=':', lw=1)
        steps_axis(ax)
        ax.set_xlabel('iteration')
        ax.set_ylabel(f'purity (top {top_n} activations)')
        ax.legend(fontsize=7, ncol=2)
        save_fig(fig, os.path.join(reports(), 'evolution_purity.png'))
    # 4. stability: the same neuron index, consecutive checkpoints
    fig, ax = pyplot.subplots(figsize=(8, 3.5))
    for layer in layers:
        ax.plot(steps[1:], stability[layer], 'o-', ms=3, label=f"layer {layer}")
    steps_axis(ax)
    ax.set_xlabel('iteration')
    ax.set_ylabel(f'top-{N_JACCARD} token Jaccard with previous')
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    save_fig(fig, os.path.join(reports(), 'evolution_stability.png'))
    per = lambda layer, key: [d[layer][key].tolist() for d in per_ckpt]  # (checkpoints, neurons)
    write_json(json, dict(steps=steps, purity_threshold=purity_threshold, emergence=emerged, stability=stability,
                    mean_token_entropy=token_h, mean_semantic_entropy=sem_h,
                    neurons={str(layer): dict(token_entropy=per(layer, 'token_entropy'), frequency=per(layer, 'frequency'),
                                              **(dict(semantic_entropy=per(layer, 'semantic_entropy'),
                                                      best_concept=per(layer, 'best'), purity=per(layer, 'purity'),
                                                      concept=per(layer, 'concept')) if lex else {}))
                             for layer in layers}))


def steps_axis(ax):
    """Iterations on a log axis that keeps 0: the early checkpoints are log-spaced."""
    ax.set_xscale('symlog', linthresh=10)
    ax.set_xlim(left=0)


# ----------------------------------------------------------------------------- layers

def agreement(ca, cb):
    """The share of the concept neurons of either layer that carry the same concept at the same index in
    both. ca, cb: (C,) each neuron's concept, -1 for none (concept_of). NaN if neither layer has one."""
    either = (ca >= 0) | (cb >= 0)
    n = either.sum().item()
    return ((ca == cb) & either).sum().item() / n if n else np.nan


def same_in_every_layer(concept_by_layer, concepts):
    """[(index, concept)]: the indices that are the same concept's neuron in every layer."""
    stacked = torch.stack(concept_by_layer)  # (L, C)
    return [(j, concepts[c]) for j, c in enumerate(stacked[0].tolist()) if c >= 0 and (stacked[:, j] == c).all()]


def cmd_layers():
    model, ck, lex, labels, windows, decode = setup(ckpt)
    if not lex:
        die("layers compares the concepts of neurons: give --lexicon=PATH (JSON concept -> words)")
    n_sites = len(neuron_sites(model))
    if n_sites < 2:  # found before the pass over the data
        die(f"layers needs at least two TopK layers; this model has {n_sites}")
    concepts = list(lex)
    stats = collect(model, windows, labels, len(concepts), progress=True)
    layers = list(stats)
    concept = {l: concept_of(stats[l]) for l in layers}
    tops = {l: top_token_sets(stats[l]) for l in layers}
    L = len(layers)
    agree, overlap = np.full((L, L), np.nan), np.full((L, L), np.nan)
    for a, la in enumerate(layers):
        for b, lb in enumerate(layers):
            agree[a, b] = agreement(concept[la], concept[lb])
            alive = (stats[la]['frequency'] > 0) & (stats[lb]['frequency'] > 0)
            overlap[a, b] = nanmean(jaccard(tops[la][alive], tops[lb][alive]))
    consistent = same_in_every_layer([concept[l] for l in layers], concepts)
    print(f"same-index consistency across layers {layers} at iteration {ck.get('iter_num')} "
          f"(concept neurons: purity >= {purity_threshold} over >= {min_words} words)")
    print("  concept agreement (share of concept neurons in either layer that carry the same concept in both):")
    for a, la in enumerate(layers):
        print(f"    layer {la}: " + ' '.join(f"{v:.2f}" for v in agree[a]))
    print(f"  mean top-{N_JACCARD} token Jaccard:")
    for a, la in enumerate(layers):
        print(f"    layer {la}: " + ' '.join(f"{v:.2f}" for v in overlap[a]))
    print(f"  neurons with the same concept in every layer: "
          + (', '.join(f"{j} ({c})" for j, c in consistent) or 'none'))
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 2, figsize=(9, 4))
    for ax, mat, title in ((axes[0], agree, 'concept agreement'), (axes[1], overlap, f'top-{N_JACCARD} token Jaccard')):
        im = ax.imshow(mat, vmin=0, vmax=1, cmap='magma')
        ax.set_xticks(range(L), layers)
        ax.set_yticks(range(L), layers)
        ax.set_xlabel('layer')
        ax.set_ylabel('layer')
        ax.set_title(title)
        for a in range(L):
            for b in range(L):
                ax.text(b, a, f"{mat[a, b]:.2f}", ha='center', va='center', color='w' if mat[a, b] < 0.6 else 'k', fontsize=8)
        fig.colorbar(im, ax=ax)
    save_fig(fig, os.path.join(reports(), f"layers_{ck.get('iter_num')}.png"))
    write_json(json, dict(checkpoint=ck.get('iter_num'), layers=layers, concept_agreement=agree.tolist(),
                    top_token_jaccard=overlap.tolist(), consistent_neurons=[dict(neuron=j, concept=c) for j, c in consistent]))


# ----------------------------------------------------------------------------- plumbing

def setup(spec):
    """Model, checkpoint dict, lexicon and its concept_labels (None without one), the fixed val windows and
    the tokenizer's decode."""
    model, ck, encode, decode = load_run(out_dir, spec, device, data_dir, threads)
    dataset, where = ck['config']['dataset'], ck['config']['data_dir']
    lex = load_lexicon(lexicon, dataset, where)
    shared = shared_words(lex or {})
    if shared:  # purity and semantic entropy give each token one concept
        w, a, b = shared[0]
        die(f"the lexicon lists {w!r} under {a} and {b}: analyze.py gives each word one concept, so keep it in one")
    if not neuron_sites(model):
        die(f"this model has no TopK layer to read: all its {model.config.n_layer} blocks are dense (n_nontopk)")
    labels = concept_labels(decode, model.config.vocab_size, lex) if lex else None
    if lex and (labels[0] == len(lex)).all():  # every purity would be 0 and every semantic entropy NaN
        die(f"no word of the lexicon is a token of {dataset}'s vocabulary: give words it has (sample.py shows its text)")
    windows = val_windows(dataset, tokens, model.config.block_size, where)
    return model, ck, lex, labels, windows, decode


def reports():
    path = report_dir or os.path.join(out_dir, 'analysis')
    os.makedirs(path, exist_ok=True)
    return path


if __name__ == '__main__':
    _, _args = configure(globals(), positional=True)
    if min_context < 0:
        die(f"--min_context must be 0 or more, not {min_context}")
    if not (0 < purity_threshold <= 1 and min_words >= 1):
        die(f"--purity_threshold is a share, above 0 and at most 1, and --min_words 1 or more, not {purity_threshold} "
            f"and {min_words}")
    if min(batch_size, top_n, tokens) < 1:
        die(f"--batch_size, --top_n and --tokens must be 1 or more, not {batch_size}, {top_n} and {tokens}")
    commands = dict(neurons=cmd_neurons, evolution=cmd_evolution, layers=cmd_layers)
    if len(_args) != 1 or _args[0] not in commands:
        given = f"not {' '.join(_args)!r}" if _args else "none was given"
        die(f"name one command: neurons, evolution or layers; {given} (see --help)")
    if _args[0] == 'evolution' and (ckpt or neuron):
        die("evolution reads every checkpoint of the run's series: leave out --ckpt and --neuron")
    if _args[0] == 'layers' and neuron:
        die("--neuron shows one neuron in full with the neurons command; layers compares whole layers: leave it out")
    if ckpt and not str(ckpt).isdigit():  # a checkpoint path: its run, not --out_dir, names and holds the reports
        folder = os.path.dirname(os.path.abspath(ckpt))
        out_dir = os.path.dirname(folder) if os.path.basename(folder) == 'series' else folder
    output_file(json)
    if report_dir:  # the default, out_dir/analysis, is made once out_dir is known to hold a run
        output_dir(report_dir)
    torch.set_grad_enabled(False)
    commands[_args[0]]()
