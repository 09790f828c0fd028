"""
Speed of the things users wait for, as ratios measured in one run (shared machines are noisy):

    python bench.py                                    # the CPU quick-start shape (4 x 128, block 64, batch 12)
    python bench.py config/train_shakespeare_char_topk.py --device=cuda --compile=True --dtype=bfloat16
    python bench.py --json=bench.json                  # the numbers, for scripts

Rows: a training step (forward, backward, AdamW) of the dense model and of the TopK model of the same
shape, timed in alternation, several repeats, median; MFU on CUDA; one TopK layer alone against plain
`topk` + `scatter`; sampling with and without the KV cache; and the throughput of recording TopK
activations, as analyze.py does. Weights are random and batches are random tokens: speed does not
depend on either, except that the CUDA TopK kernel is faster on the rows of trained models than on
these (README "Speed", GPU).
"""

import statistics
import time

import torch

from configurator import configure, die, output_file, write_json
from model import (GPT, GPTConfig, TopK, neuron_sites, neuron_width, record_activations, system_settings,
                   topk_scatter)

# -----------------------------------------------------------------------------
batch_size = 12  # sequences per training step
block_size = 64  # context length
n_layer = 4  # transformer blocks
n_head = 4  # attention heads
n_embd = 128  # width
vocab_size = 84  # shakespeare_char's vocabulary
bias = False  # bias in Linears and LayerNorms
dropout = 0.0  # dropout probability
topk = 32  # k of the TopK model (the dense twin has topk=0)
n_nontopk = 1  # final dense blocks of the TopK model
topk_site = 'resid'  # 'resid' or 'mlp'
steps = 20  # timed training steps per repeat
repeats = 9  # alternating rounds of both models; medians are reported
sample_tokens = [128, 512]  # new tokens per sampling row (--sample_tokens= skips sampling)
sample_repeats = 3  # repeats per sampling row
analysis_tokens = 65536  # tokens pushed through record_activations
device = 'auto'  # 'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'mps'
dtype = 'auto'  # as train.py's: 'auto' (bfloat16 on a CUDA GPU with native bf16, else float32), 'float32', 'bfloat16', 'float16'
compile = 'auto'  # torch.compile: 'auto' (on CUDA), True, False
threads = 0  # CPU threads; 0 keeps torch's default
seed = 1337  # weights and batches
profile = 0  # > 0: print this many ops (kernels on CUDA) that took the most time in 3 steps of each model
json = ''  # also write the numbers as JSON to this path
# -----------------------------------------------------------------------------


def sync():  # GPU work is queued: a timing must wait for it to finish
    if device_type == 'cuda':
        torch.cuda.synchronize()  # the current device, which system_settings set to --device
    elif device_type == 'mps':
        torch.mps.synchronize()


def make_model(k, **over):
    torch.manual_seed(seed)
    cfg = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size,
               bias=bias, dropout=dropout, topk=k, n_nontopk=n_nontopk, topk_site=topk_site)
    cfg.update(over)
    return GPT(GPTConfig(**cfg)).to(device)


def train_stepper(model):
    """A function that runs `steps` training steps and returns the mean seconds per step."""
    optimizer = model.configure_optimizers(0.1, 1e-4, (0.9, 0.99), device_type)
    net = torch.compile(model) if compile else model
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randint(vocab_size, (batch_size, block_size + 1), generator=gen).to(device) for _ in range(4)]

    def run(n=steps):
        sync()
        t0 = time.perf_counter()
        for i in range(n):
            xy = batches[i % len(batches)]
            with autocast:
                _, loss = net(xy[:, :-1], xy[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync()
        return (time.perf_counter() - t0) / n
    return run


def row(name, value, note=''):
    print(f"| {name:<28} | {value:>14} | {note} |", flush=True)


def show_profile(runs):
    """torch.profiler over 3 training steps of each model: the kernels that took the most time, so the
    extra cost of the TopK model can be pinned on its kernels (README "Speed", GPU)."""
    activity = torch.profiler.ProfilerActivity
    activities = [activity.CUDA] if device_type == 'cuda' else [activity.CPU]
    key = 'self_device_time_total' if device_type == 'cuda' else 'self_cpu_time_total'
    for name, run in zip(('dense', 'TopK'), runs):
        with torch.profiler.profile(activities=activities) as prof:
            run(3)
        print(f"\n# profile, {name} model, 3 training steps\n"
              f"{prof.key_averages().table(sort_by=key, row_limit=profile, max_name_column_width=60)}")


def alternate(fns, n):
    """Call each function in turn, n rounds, the order reversed every other round (so neither always runs
    first, after the other has warmed or loaded the caches); per function the list of its n timings."""
    times = [[] for _ in fns]
    for r in range(n):
        pairs = list(zip(times, fns))
        for t, fn in pairs[::-1] if r % 2 else pairs:
            t.append(fn())
    return times


def round_ratio(base, other):
    """The median over rounds of other's time / base's time within the round: both timed under the same
    load, so a machine's slow spells cancel out of it more than out of a ratio of medians."""
    return statistics.median(b / a for a, b in zip(base, other))


if __name__ == '__main__':
    configure(globals(), file_keys_strict=False)  # a train_*.py config gives the shape; the rest is skipped
    try:
        device, device_type, dtype, compile, autocast = system_settings(device, dtype, compile, threads)
    except ValueError as e:
        die(str(e))
    if min(steps, repeats, sample_repeats, batch_size, analysis_tokens, *sample_tokens) < 1:
        die("--steps, --repeats, --sample_repeats, --batch_size, --analysis_tokens and --sample_tokens must each be 1 "
            "or more")
    if profile < 0:
        die(f"--profile is how many ops to print: 0 (no profile) or more, not {profile}")
    if not 0 <= n_nontopk < n_layer:
        die(f"--n_nontopk must be 0 to n_layer - 1 ({n_layer - 1}), so that some block is TopK, not {n_nontopk}")
    if topk < 1:
        die("--topk must be 1 or more: bench.py compares the TopK model with its dense twin, which it builds itself")
    output_file(json)
    machine = torch.cuda.get_device_name() if device_type == 'cuda' else f"{device}, {torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}"
    print(f"# bench: {n_layer}x{n_embd}, {n_head} heads, block {block_size}, batch {batch_size}, vocab {vocab_size}, TopK k={topk} at "
          f"{topk_site} in {n_layer - n_nontopk} of {n_layer} blocks; {machine}, {dtype}"
          f"{', compiled' if compile else ''}; torch {torch.__version__}")
    results = {'machine': machine, 'dtype': dtype, 'compile': compile, 'torch': torch.__version__,
               'shape': dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                             batch_size=batch_size, topk=topk, n_nontopk=n_nontopk, topk_site=topk_site)}

    # training step: dense vs TopK, alternating so both see the same machine load
    try:
        dense, sparse = make_model(0), make_model(topk)
    except ValueError as e:
        die(str(e))
    runs = [train_stepper(dense), train_stepper(sparse)]
    for run in runs:
        run(3)  # warm-up (and compilation)
    t_dense, t_topk = alternate(runs, repeats)
    if profile:
        show_profile(runs)  # printed before the table, which stays in one piece
    md, mt = statistics.median(t_dense), statistics.median(t_topk)
    ratio = round_ratio(t_dense, t_topk)
    tokens = batch_size * block_size
    print("| measurement | value | note |\n|---|---:|---|")
    row('train step, dense', f"{md * 1e3:.2f} ms", f"{tokens / md:,.0f} tok/s")
    row('train step, TopK', f"{mt * 1e3:.2f} ms", f"{tokens / mt:,.0f} tok/s")
    row('TopK / dense step time', f"{ratio:.3f}", f'median of {repeats} per-round ratios')
    results['train'] = dict(dense_ms=md * 1e3, topk_ms=mt * 1e3, ratio=ratio, tokens_per_step=tokens)
    if device_type == 'cuda':
        mfu = {name: m.estimate_mfu(tokens, t) for name, m, t in (('dense', dense, md), ('topk', sparse, mt))}
        if mfu['dense'] is not None:
            row('MFU dense / TopK', f"{mfu['dense'] * 100:.1f}% / {mfu['topk'] * 100:.1f}%",
                "of the card's peak in model.PEAK_FLOPS (bf16; fp16 on a V100 or T4)")
            results['train'].update(mfu_dense=mfu['dense'], mfu_topk=mfu['topk'])
        else:
            row('MFU', '-', f"{torch.cuda.get_device_name()} is not in model.PEAK_FLOPS: add its bf16 peak")
    del dense, runs

    # one TopK layer, forward and backward, on a batch of random activations: this codebase's TopK (the
    # Triton kernel on CUDA, the threshold-and-mask path on CPU) against the plain `topk` + `scatter`
    # that a compiled TopK runs where there is no Triton. Float32, as the residual stream is under
    # autocast; at the MLP site bf16 autocast would hand TopK bf16, half the bytes.
    x = torch.randn(batch_size * block_size, neuron_width(sparse), device=device, requires_grad=True)  # (B*T, C)
    grad = torch.randn_like(x)

    def layer_timer(fn, n=20):
        def timed():
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                fn(x).backward(grad)
            sync()
            return (time.perf_counter() - t0) / n
        return timed
    layers = [layer_timer(TopK(topk)), layer_timer(lambda x: topk_scatter(x, topk))]
    for timed in layers:
        timed()  # warm-up
    t_ours, t_plain = alternate(layers, repeats)
    mo, mp = statistics.median(t_ours), statistics.median(t_plain)
    speedup = round_ratio(t_ours, t_plain)
    shape = f"{x.size(0)} x {x.size(1)}, k={topk}"
    row('TopK layer, fwd + bwd', f"{mo * 1e6:,.0f} us", shape)
    row('same with topk + scatter', f"{mp * 1e6:,.0f} us", shape)
    row('TopK layer speed-up', f"{speedup:.1f}x", f'median of {repeats} per-round ratios')
    results['topk_layer'] = dict(ours_us=mo * 1e6, topk_scatter_us=mp * 1e6, speedup=speedup)
    del x, grad, layers

    # sampling: the cache covers every token only within block_size, so the sampling model gets a
    # block long enough for the prompt and the longest row
    sampler = make_model(topk, block_size=max(block_size, max(sample_tokens, default=0) + 1)).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long, device=device)
    results['sample'] = {}
    for n in sample_tokens:
        def timed(cache, n=n):
            sync()
            t0 = time.perf_counter()
            with autocast:
                sampler.generate(prompt, n, temperature=1.0, top_k=None, use_cache=cache,
                                 generator=torch.Generator(device=device).manual_seed(seed))
            sync()
            return time.perf_counter() - t0
        timed(True, 8), timed(False, 8)  # warm-up
        t_cached, t_plain = alternate([lambda: timed(True), lambda: timed(False)], sample_repeats)
        c, p = statistics.median(t_cached), statistics.median(t_plain)
        speedup = round_ratio(t_cached, t_plain)
        row(f"sample {n} tokens, KV cache", f"{c * 1e3:.0f} ms", f"{n / c:,.0f} tok/s")
        row(f"sample {n} tokens, no cache", f"{p * 1e3:.0f} ms", f"{n / p:,.0f} tok/s")
        row(f"KV cache speed-up at {n}", f"{speedup:.1f}x", f'median of {sample_repeats} per-round ratios')
        results['sample'][n] = dict(cached_tok_s=n / c, uncached_tok_s=n / p, speedup=speedup)

    # analysis: recording sparse TopK activations, as analyze.py does for every checkpoint
    sparse.eval()
    sites = neuron_sites(sparse)
    batch = torch.randint(vocab_size, (64, block_size), device=device)
    n_batches = max(1, analysis_tokens // batch.numel())

    def record():
        sync()
        t0 = time.perf_counter()
        with autocast:
            for _ in range(n_batches):
                record_activations(sparse, batch, sites)
        sync()
        return time.perf_counter() - t0
    record()
    t = statistics.median(record() for _ in range(3))
    row('record TopK activations', f"{n_batches * batch.numel() / t:,.0f} tok/s", f"{len(sites)} layers, sparse")
    results['analysis_tok_s'] = n_batches * batch.numel() / t

    write_json(json, results)
