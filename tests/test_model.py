"""Claims of model.py: the TopK activation, where it sits, the KV cache, nanoGPT compatibility."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

import model as model_module
from model import GPT, GPTConfig, TopK, checkpoint_series, load_checkpoint, peak_flops, topk_layers


def tiny(**kw):
    cfg = dict(n_layer=3, n_head=2, n_embd=32, block_size=16, vocab_size=50, topk=4, n_nontopk=1)
    cfg.update(kw)
    torch.manual_seed(0)
    return GPT(GPTConfig(**cfg)).eval()


def test_topk_keeps_exactly_k_entries_with_their_values():
    torch.manual_seed(0)
    x = torch.randn(5, 7, 64) + 3  # all positive: the ReLU never bites
    y = TopK(8)(x)
    assert ((y != 0).sum(-1) == 8).all()
    kept = y != 0
    assert torch.equal(y[kept], x[kept])  # kept entries keep their value
    assert (x[kept].view(5, 7, 8).min(-1).values >= x.masked_fill(kept, -1e9).max(-1).values).all()


def test_topk_drops_minus_infinity_to_zero_not_nan():
    x = torch.tensor([[3.0, 2.0, 1.0, float('-inf')]])
    assert torch.equal(TopK(2)(x), torch.tensor([[3.0, 2.0, 0.0, 0.0]]))


def test_topk_keeps_a_nan_as_torch_topk_does_even_beside_a_normal_row():
    x = torch.tensor([[1.0, 2.0, 3.0, float('nan')], [1.0, 2.0, 3.0, 4.0]])  # a diverging run shows in its loss
    torch.testing.assert_close(TopK(2)(x), torch.tensor([[0.0, 0.0, 3.0, float('nan')], [0.0, 0.0, 3.0, 4.0]]),
                               rtol=0, atol=0, equal_nan=True)


def test_topk_relu_zeroes_a_kept_negative_entry():
    x = torch.tensor([[3.0, -1.0, -2.0, -5.0]])
    assert torch.equal(TopK(2)(x), torch.tensor([[3.0, 0.0, 0.0, 0.0]]))


def reference_topk(x, k):
    """relu(topk(x)) scattered into zeros, through autograd's own ops."""
    v, i = torch.topk(x, k, dim=-1)
    return torch.zeros_like(x).scatter(-1, i, F.relu(v))


def run_against_reference(topk, dtype=torch.float32, device='cpu', width=32):
    """Forward and backward through topk (a k=5 TopK) and through reference_topk on the same input, some
    of whose rows keep negative entries; asserts the two agree. Returns the input and the output."""
    torch.manual_seed(0)
    x = (torch.randn(4, 6, width) - 1.2).to(device, dtype).requires_grad_()
    g = torch.randn(4, 6, width).to(device, dtype)
    y = topk(x)
    y.backward(g)
    x2 = x.detach().clone().requires_grad_()
    y2 = reference_topk(x2, 5)
    y2.backward(g)
    assert 0 < (y != 0).sum() < 4 * 6 * 5  # so the ReLU bites
    assert torch.equal(y, y2) and torch.equal(x.grad, x2.grad)
    return x, y


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])  # the CPU fast path, the exact path
def test_topk_matches_the_reference_and_its_gradient_flows_only_through_kept_positive_entries(dtype, monkeypatch):
    masked, real = [], model_module._cpu_topk_mask

    def spy(x, k):  # which path ran
        keep = real(x, k)
        masked.append(keep is not None)
        return keep
    monkeypatch.setattr(model_module, '_cpu_topk_mask', spy)
    x, y = run_against_reference(TopK(5), dtype)
    assert masked == [dtype == torch.float32]  # float32 took the fast path; bfloat16 the exact one
    assert ((x.grad != 0) == (y != 0)).all()


def refuse(*args):
    raise AssertionError('_TopKFunction used')


def test_compiled_topk_runs_plain_ops_that_match_the_reference(monkeypatch):
    # under torch.compile TopK must not reach the hand-written Function (it trained wrongly on CUDA bf16)
    monkeypatch.setattr(model_module._TopKFunction, 'apply', refuse)
    run_against_reference(torch.compile(TopK(5), backend='aot_eager', fullgraph=True))  # traces as inductor does


def test_topk_keeps_exactly_k_even_with_ties_at_the_kth_value():
    x = torch.tensor([[2.0, 1.0, 1.0, 1.0, 1.0, 0.5]])  # a threshold mask would keep five
    y = TopK(3)(x)
    assert (y != 0).sum() == 3 and y[0, 0] == 2.0


# The Triton kernel runs on CUDA, or on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1 with triton
# installed). CI has neither, so these run on a GPU machine: `python -m pytest -q tests/test_model.py -k triton`.
triton_device = 'cuda' if torch.cuda.is_available() else 'cpu'
needs_triton = pytest.mark.skipif(
    model_module.triton is None or (triton_device == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1'),
    reason='needs Triton and CUDA, or TRITON_INTERPRET=1')


@needs_triton
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_triton_topk_matches_the_reference_eager_and_compiled(dtype, monkeypatch):
    topk = lambda x: model_module.topk_relu_triton(x, 5)
    run_against_reference(topk, dtype, triton_device, width=30)  # not a power of 2: the kernel pads each row
    backend = 'inductor' if triton_device == 'cuda' else 'aot_eager'  # on CUDA, as train.py compiles
    run_against_reference(torch.compile(topk, backend=backend, fullgraph=True), dtype, triton_device, width=30)
    x = torch.randn(3, 30, device=triton_device, dtype=dtype, requires_grad=True)
    torch.library.opcheck(model_module.topk_relu_triton, (x, 5))  # its fake tensor and autograd registrations
    if triton_device == 'cuda':  # TopK itself runs the kernel on CUDA, eager and compiled
        monkeypatch.setattr(model_module._TopKFunction, 'apply', refuse)
        run_against_reference(TopK(5), dtype, 'cuda', width=30)
        run_against_reference(torch.compile(TopK(5), fullgraph=True), dtype, 'cuda', width=30)


@needs_triton
@pytest.mark.parametrize('width,k', [(768, 192), (3072, 64), (100, 7)])  # GPT-2 resid and MLP, a ragged width
def test_triton_topk_keeps_exactly_k_at_model_widths_and_with_ties(width, k):
    torch.manual_seed(0)
    x = torch.randn(8, width, device=triton_device) + 3  # +3: the k largest are positive, so exactly k survive
    y = model_module.topk_relu_triton(x, k)
    assert torch.equal(y, reference_topk(x, k))
    x = -torch.randn(3, width, device=triton_device).abs()  # rows with k, k // 2 and no positive entries:
    x[0, :k], x[1, :k // 2] = 1 + x[0, :k].abs(), 1 + x[1, :k // 2].abs()  # the kernel skips its search
    assert torch.equal(model_module.topk_relu_triton(x, k), reference_topk(x, k))
    a = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)).item()  # its lowest bit is 1: the search's last step
    x = torch.tensor([[2.0, a, a, a, a, 0.5]], device=triton_device)
    assert model_module.topk_relu_triton(x, 3).tolist() == [[2.0, a, a, 0.0, 0.0, 0.0]]  # first ties first
    for nan in (float('nan'), -float('nan')):  # kept, as torch.topk keeps it, so that a diverging run shows
        x[0, 5] = nan
        assert model_module.topk_relu_triton(x, 3).isnan().sum() == 1


def test_dense_model_has_no_topk_modules_and_nanogpt_parameter_names():
    model = tiny(topk=0, n_layer=1)
    assert not any(isinstance(m, TopK) for m in model.modules())
    assert topk_layers(model) == {}
    nanogpt_names = {  # nanoGPT's GPT(n_layer=1, bias=True).state_dict() keys, weights tied
        'transformer.wte.weight', 'transformer.wpe.weight', 'transformer.h.0.ln_1.weight', 'transformer.h.0.ln_1.bias',
        'transformer.h.0.attn.c_attn.weight', 'transformer.h.0.attn.c_attn.bias', 'transformer.h.0.attn.c_proj.weight',
        'transformer.h.0.attn.c_proj.bias', 'transformer.h.0.ln_2.weight', 'transformer.h.0.ln_2.bias',
        'transformer.h.0.mlp.c_fc.weight', 'transformer.h.0.mlp.c_fc.bias', 'transformer.h.0.mlp.c_proj.weight',
        'transformer.h.0.mlp.c_proj.bias', 'transformer.ln_f.weight', 'transformer.ln_f.bias', 'lm_head.weight'}
    assert set(model.state_dict()) == nanogpt_names


@pytest.mark.parametrize('site,width', [('resid', 32), ('mlp', 128)])
def test_each_topk_layer_outputs_exactly_k_nonzeros_and_the_last_layers_stay_dense(site, width):
    model = tiny(topk_site=site, n_layer=4, n_nontopk=2, topk=6)
    sites = topk_layers(model)
    assert list(sites) == [0, 1]  # the last n_nontopk=2 blocks have no TopK
    seen = {}
    for i, m in sites.items():
        m.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, out))
    model(torch.randint(0, 50, (3, 16)))
    for i, out in seen.items():
        assert out.shape == (3, 16, width)
        assert ((out != 0).sum(-1) <= 6).all() and ((out != 0).sum(-1) == 6).float().mean() > 0.9
        assert (out >= 0).all()


def test_a_topk_model_trains_at_both_sites():
    for site in ('resid', 'mlp'):
        model = tiny(topk_site=site).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        x = torch.randint(0, 50, (8, 16))
        losses = []
        for _ in range(30):
            _, loss = model(x, x)  # learn to copy the input: easy, so the loss must fall
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], site


@pytest.mark.parametrize('site', ['resid', 'mlp'])
def test_cached_and_uncached_greedy_generation_give_the_same_tokens(site):
    model = tiny(topk_site=site)
    prompt = torch.randint(0, 50, (2, 5))
    # 30 new tokens: past block_size=16, where the cached path has to re-encode the window
    a = model.generate(prompt, 30, temperature=0, use_cache=True)
    b = model.generate(prompt, 30, temperature=0, use_cache=False)
    assert torch.equal(a, b)


def test_cached_logits_match_a_full_forward():
    model = tiny()
    from model import KVCache
    x = torch.randint(0, 50, (2, 12))
    full, _ = model(x, x)  # (B, T, vocab)
    cache = KVCache(model.config.n_layer, model.config.block_size)
    steps = [model(x[:, :5], cache=cache)[0]] + [model(x[:, t:t + 1], cache=cache)[0] for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 4:], rtol=1e-4, atol=1e-5)
    # several new tokens at once after a cached past: each sees the past and the new ones up to itself
    cache = KVCache(model.config.n_layer, model.config.block_size)
    model(x[:, :5], cache=cache)
    torch.testing.assert_close(model(x[:, 5:], x[:, 5:], cache=cache)[0], full[:, 5:], rtol=1e-4, atol=1e-5)


def fixed_logits(model, monkeypatch, logits):
    """Make the model predict logits (vocab,) after any context: generate's sampling alone is tested."""
    monkeypatch.setattr(model, 'forward', lambda idx, targets=None, cache=None: (logits.expand(idx.size(0), 1, -1), None))


def test_sampling_draws_from_the_softmax_of_logits_over_temperature_among_the_top_k(monkeypatch):
    model = tiny()
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    fixed_logits(model, monkeypatch, logits)
    prompt = torch.zeros(20000, 1, dtype=torch.long)

    def shares(**kw):
        new = model.generate(prompt, 1, generator=torch.Generator().manual_seed(0), **kw)[:, 1]
        return torch.bincount(new, minlength=5).float() / len(new)
    torch.testing.assert_close(shares(temperature=0.5), torch.softmax(logits / 0.5, 0), atol=0.015, rtol=0)
    top2 = torch.softmax(logits[:2] / 0.8, 0)
    torch.testing.assert_close(shares(temperature=0.8, top_k=2), torch.cat([top2, torch.zeros(3)]), atol=0.015, rtol=0)
    assert shares(top_k=1).tolist() == [1, 0, 0, 0, 0]  # the likeliest token, always


def test_weight_decay_falls_on_the_matmul_and_embedding_weights_only():
    model = tiny(bias=True)
    decay, no_decay = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu').param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0
    assert all(not n.endswith('bias') and '.ln_' not in n for n in map(names.get, map(id, decay['params'])))
    assert all(n.endswith('bias') or '.ln_' in n for n in map(names.get, map(id, no_decay['params'])))
    assert len(decay['params']) + len(no_decay['params']) == len(names)


def test_sampling_is_reproducible_with_a_seed():
    model = tiny()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    a = model.generate(prompt, 10, top_k=5, generator=torch.Generator().manual_seed(3))
    b = model.generate(prompt, 10, top_k=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def nanogpt_logits(sd, n_layer, n_head, x):
    """nanoGPT's forward pass written out from its state dict, apart from model.py: the reference a
    loaded nanoGPT checkpoint must match (LayerNorm eps 1e-5, exact GELU, causal softmax attention,
    lm_head tied to wte)."""
    T, C = x.size(1), sd['transformer.wte.weight'].size(1)
    h = sd['transformer.wte.weight'][x] + sd['transformer.wpe.weight'][:T]  # (B, T, C)
    norm = lambda v, name: F.layer_norm(v, (C,), sd[name + '.weight'], sd.get(name + '.bias'), 1e-5)
    future = torch.ones(T, T).triu(1).bool()
    for i in range(n_layer):
        lin = lambda v, name, i=i: F.linear(v, sd[f'transformer.h.{i}.{name}.weight'], sd.get(f'transformer.h.{i}.{name}.bias'))
        q, k, v = (t.view(*x.shape, n_head, C // n_head).transpose(1, 2)  # (B, nh, T, hs)
                   for t in lin(norm(h, f'transformer.h.{i}.ln_1'), 'attn.c_attn').split(C, -1))
        att = (q @ k.transpose(-2, -1) / math.sqrt(C // n_head)).masked_fill(future, float('-inf')).softmax(-1)
        h = h + lin((att @ v).transpose(1, 2).reshape(h.shape), 'attn.c_proj')
        h = h + lin(F.gelu(lin(norm(h, f'transformer.h.{i}.ln_2'), 'mlp.c_fc')), 'mlp.c_proj')
    return F.linear(norm(h, 'transformer.ln_f'), sd['transformer.wte.weight'])  # (B, T, V)


def test_a_nanogpt_checkpoint_loads_and_gives_the_same_logits(tmp_path):
    model = tiny(topk=0, bias=True)
    with torch.no_grad():  # weights far from their init, where an approximate GELU or another eps would show
        for p in model.parameters():
            p.normal_(0, 0.5)
    # a checkpoint as nanoGPT's train.py writes it: compiled-module prefix, the mask buffer of
    # its non-flash attention path, and model_args without any TopK field
    state = {'_orig_mod.' + k: v for k, v in model.state_dict().items()}
    for i in range(3):
        state[f'_orig_mod.transformer.h.{i}.attn.bias'] = torch.tril(torch.ones(16, 16)).view(1, 1, 16, 16)
    model_args = dict(n_layer=3, n_head=2, n_embd=32, block_size=16, bias=True, vocab_size=50, dropout=0.0)
    torch.save({'model': state, 'model_args': model_args, 'iter_num': 7, 'best_val_loss': torch.tensor(1.5),
                'config': {'dataset': 'x'}, 'optimizer': {}}, tmp_path / 'ckpt.pt')
    loaded, ckpt = load_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert ckpt['iter_num'] == 7 and loaded.config.topk == 0 and not loaded.training  # ready to read: no dropout
    x = torch.randint(0, 50, (2, 16))
    torch.testing.assert_close(loaded(x, x)[0], model(x, x)[0], rtol=0, atol=0)
    nano = {k.removeprefix('_orig_mod.'): v for k, v in state.items()}
    torch.testing.assert_close(loaded(x, x)[0], nanogpt_logits(nano, 3, 2, x), rtol=1e-4, atol=1e-5)


def test_an_unreadable_checkpoint_raises_one_clear_error(tmp_path):
    bad = tmp_path / 'ckpt.pt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='cannot read checkpoint'):
        load_checkpoint(str(bad))
    model_args = dict(n_layer=3, n_head=2, n_embd=32, block_size=16, bias=True, vocab_size=50, dropout=0.0)
    torch.save({'model': tiny(topk=0, bias=True).state_dict(), 'model_args': {**model_args, 'n_embd': 64}}, bad)
    with pytest.raises(ValueError, match='does not fit this model.py .*size mismatch'):  # reshaped weights
        load_checkpoint(str(bad))


def test_peak_flops_table_matches_card_names():
    assert peak_flops('NVIDIA H100 80GB HBM3') == 989e12
    assert peak_flops('NVIDIA A100-SXM4-40GB') == 312e12
    assert peak_flops('NVIDIA A10G') == 70e12
    assert peak_flops('NVIDIA H100 PCIe') == 756e12 and peak_flops('NVIDIA L40') == 181e12
    assert peak_flops('NVIDIA L4') == 121e12 and peak_flops('NVIDIA RTX A1000') is None  # no A100 in it
    assert peak_flops('Some Unknown Card') is None


def test_mfu_counts_the_palm_flops_per_token_against_the_cards_peak(monkeypatch):
    import model
    with torch.device('meta'):  # GPT-2 small's shapes without allocating its weights
        gpt2 = GPT(GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, bias=False,
                             topk=0))
    # PaLM, appendix B: 6N + 12*L*H*Q*T per token, N without the position embedding (123,587,328 here)
    flops_per_token = 6 * 123_587_328 + 12 * 12 * 12 * 64 * 1024
    monkeypatch.setattr(model, 'peak_flops', lambda: 312e12)  # an A100
    assert gpt2.estimate_mfu(12 * 1024, 0.5) == pytest.approx(flops_per_token * 12 * 1024 / 0.5 / 312e12)
    monkeypatch.setattr(model, 'peak_flops', lambda: None)
    assert gpt2.estimate_mfu(12 * 1024, 0.5) is None  # a card missing from PEAK_FLOPS


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match='topk'):
        GPTConfig(n_embd=32, n_head=2, topk=33)
    with pytest.raises(ValueError, match='topk_site'):
        GPTConfig(topk_site='attn')
    with pytest.raises(ValueError, match='n_head'):
        GPTConfig(n_head=0)


def test_the_checkpoint_series_skips_files_that_are_not_of_it(tmp_path):
    (tmp_path / 'series').mkdir()
    for name in ('ckpt_0000010.pt', 'ckpt_0000002.pt', 'ckpt_best.pt'):  # the last: a user's copy
        (tmp_path / 'series' / name).write_bytes(b'')
    assert [i for i, _ in checkpoint_series(str(tmp_path))] == [2, 10]


def test_a_numbered_cuda_device_becomes_the_current_one_and_auto_dtype_needs_native_bf16(monkeypatch):
    """No GPU here: torch.cuda is faked. set_device needs an index, so plain 'cuda' (what auto gives) skips it."""
    chosen = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, 'set_device', chosen.append)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32  # system_settings sets them
    try:
        assert model_module.system_settings('auto', compile=False)[:3] == ('cuda', 'cuda', 'bfloat16')
        assert model_module.system_settings('cuda:1', compile=False)[0] == 'cuda:1'
        # the bf16 check reads the current GPU: cuda:1 must be it by then (here only cuda:1 has bf16)
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda **k: chosen[-1:] == ['cuda:1'])
        chosen.clear()
        assert model_module.system_settings('cuda:1', compile=False)[2] == 'bfloat16'
        # a V100 or T4 only emulates bf16, and is_bf16_supported() counts emulation unless told not to
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: including_emulation)
        assert model_module.system_settings('auto', compile=False)[2] == 'float32'
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert chosen == ['cuda:1']
