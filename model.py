"""
A GPT with TopK layers: a TopK Language Model (Takahashi, Inaba, Inui, Heinzerling, 2025,
arXiv:2506.21468). The early and middle blocks end with a TopK activation that keeps the k largest
entries of the hidden state and zeroes the rest, so the hidden state there *is* a TopK sparse
autoencoder latent (Gao et al. 2024) with no SAE trained afterwards. The last `n_nontopk` blocks
stay dense. With topk=0 this is a plain GPT whose parameter names match nanoGPT's (karpathy), so
a nanoGPT checkpoint loads as is.

TopK sites, for plain `register_forward_hook`:
    topk_site='resid': model.transformer.h[i].topk       output (B, T, n_embd), the residual stream
    topk_site='mlp':   model.transformer.h[i].mlp.topk   output (B, T, 4*n_embd), the MLP hidden layer
`topk_layers(model)` returns {layer index: TopK module} for either site.
"""

import contextlib
import ctypes
import glob
import json
import math
import os
import re
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed (nanoGPT)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2
    topk: int = 0  # k entries kept at each TopK layer; 0 = dense model, no TopK anywhere
    n_nontopk: int = 1  # the last n_nontopk blocks stay dense (the paper keeps final layers dense)
    topk_site: str = 'resid'  # 'resid': TopK on the block's output; 'mlp': TopK replaces the MLP's GELU

    def __post_init__(self):
        if self.topk_site not in ('resid', 'mlp'):
            raise ValueError(f"topk_site must be 'resid' or 'mlp', not {self.topk_site!r}")
        width = self.n_embd if self.topk_site == 'resid' else 4 * self.n_embd
        if min(self.n_layer, self.n_head, self.n_embd, self.block_size, self.vocab_size) < 1:  # first: the rest use them
            raise ValueError("n_layer, n_head, n_embd, block_size and vocab_size must each be 1 or more")
        if not 0 <= self.topk <= width:
            raise ValueError(f"topk must be between 0 and the TopK width {width}, not {self.topk}")
        if not 0 <= self.n_nontopk <= self.n_layer:
            raise ValueError(f"n_nontopk must be between 0 and n_layer={self.n_layer}, not {self.n_nontopk}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")

    def is_topk_layer(self, i):
        return self.topk > 0 and i < self.n_layer - self.n_nontopk


class _TopKFunction(torch.autograd.Function):
    """relu(topk(x)) scattered back into zeros, with a backward that touches only the kept entries.
    Autograd's own graph for topk + relu + scatter builds and scatters a full-width gradient twice.
    On CPU, where torch.topk's partial sort is most of the cost, numpy's introselect finds each
    row's k-th largest value 3-5x faster and a mask keeps the entries at or above it (README, "The model
    and its hooks"; bench.py times the whole layer)."""

    @staticmethod
    def forward(ctx, x, k):
        keep = _cpu_topk_mask(x, k)
        if keep is not None:
            ctx.save_for_backward(keep)
            return x.masked_fill(~keep, 0)  # not x * keep: -inf * 0 would be NaN
        values, indices = torch.topk(x, k, dim=-1, sorted=False)  # (..., k) each
        values = values.clamp_(min=0)  # the ReLU of a TopK SAE: a kept negative entry becomes 0
        ctx.save_for_backward(indices, values)
        return torch.zeros_like(x).scatter_(-1, indices, values)

    @staticmethod
    def backward(ctx, grad_out):
        if len(ctx.saved_tensors) == 1:  # the CPU mask
            return grad_out * ctx.saved_tensors[0], None
        indices, values = ctx.saved_tensors
        grad_kept = grad_out.gather(-1, indices).masked_fill_(values <= 0, 0)  # ReLU's gradient
        return torch.zeros_like(grad_out).scatter_(-1, indices, grad_kept), None


def _cpu_topk_mask(x, k):
    """The CPU fast path: a bool mask of the k largest entries that are > 0, or None where it does not
    apply (other devices or dtypes, or a tie at the k-th value, where a mask would keep more than k;
    the exact topk path then decides)."""
    if x.device.type != 'cpu' or x.dtype not in (torch.float32, torch.float64):
        return None
    C = x.size(-1)
    kth = torch.from_numpy(np.partition(x.detach().numpy(), C - k, axis=-1)[..., C - k:C - k + 1])  # (..., 1)
    keep = x >= kth
    if (keep.sum(-1) != k).any():  # a tie keeps more than k; a NaN row (NaN >= kth is False) fewer
        return None
    return keep & (x > 0)


# On CUDA, torch.topk's radix select was most of the TopK cost (README "Speed", GPU). One Triton program
# per row holds the row in registers and finds its k-th largest value by a binary search on its bits; a
# custom op keeps it one opaque call under torch.compile, with a backward Inductor can fuse.
try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the paths above serve every device
    triton = None

if triton is not None:
    @triton.jit
    def _topk_relu_kernel(x_ptr, out_ptr, C, k, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * C + cols, mask=cols < C, other=0.0).to(tl.float32)  # (BLOCK,)
        # A positive float's bits, read as an int32, sort as the float does, and its sign bit is 0, so 31
        # bits hold every key. Entries <= 0 (and the padding) get key 0; the ReLU drops them anyway. A NaN
        # of either sign gets a key above +inf's: as in torch.topk it is kept, so a diverging run shows in
        # its loss. t: a bound with at least k keys >= t (n counts them), raised bit by bit from the top to
        # the k-th largest key. The search stops early once exactly k keys are >= t (they are the k
        # largest), on average after 8-15 of the 31 bits, and does not start when at most k entries are
        # positive: then the ReLU alone decides, which in trained models is the case for 11-99% of the
        # rows of a layer (README "Speed", GPU).
        key = tl.where(x <= 0, 0, x.to(tl.int32, bitcast=True) & 0x7FFFFFFF)
        n_pos = tl.sum((key > 0).to(tl.int32), axis=0)
        t, n, bit = tl.full((), 0, tl.int32), tl.full((), BLOCK, tl.int32), tl.full((), 30, tl.int32)
        while (bit >= 0) & (n != k) & (n_pos > k):
            step = t | (1 << bit)
            count = tl.sum((key >= step).to(tl.int32), axis=0)
            t = tl.where(count >= k, step, t)
            n = tl.where(count >= k, count, n)
            bit -= 1
        above, tie = key > t, key == t
        need = k - tl.sum(above.to(tl.int32), axis=0)  # ties at t fill up to exactly k, first index first
        keep = above | (tie & (tl.cumsum(tie.to(tl.int32), axis=0) <= need))
        # with at most k positive entries t stays 0, and ties of key 0 (entries <= 0, the padding) fill
        # up k: `key > 0` drops them
        tl.store(out_ptr + row * C + cols, tl.where(keep & (key > 0), x, 0.0).to(out_ptr.dtype.element_ty),
                 mask=cols < C)

    @torch.library.custom_op('topklm::topk_relu', mutates_args=())
    def topk_relu_triton(x: torch.Tensor, k: int) -> torch.Tensor:
        """relu(topk(x)) scattered into zeros, like _TopKFunction, by _topk_relu_kernel."""
        x = x.contiguous()
        out = torch.empty_like(x)
        C = x.size(-1)
        block = triton.next_power_of_2(C)
        warps = min(8, max(1, block // 1024))  # 1 at width 768, 4 at 3072 (README "Speed", GPU)
        # Triton launches on the current GPU, which may not be x's (CPU tensors: Triton's interpreter, in tests)
        with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
            _topk_relu_kernel[(x.numel() // C,)](x, out, C, k, BLOCK=block, num_warps=warps)
        return out

    @topk_relu_triton.register_fake
    def _(x, k):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    def _topk_relu_setup(ctx, inputs, output):
        ctx.save_for_backward(output)

    def _topk_relu_backward(ctx, grad_out):
        out, = ctx.saved_tensors
        return grad_out.masked_fill(out <= 0, 0), None  # kept and positive <=> out > 0

    topk_relu_triton.register_autograd(_topk_relu_backward, setup_context=_topk_relu_setup)


def topk_scatter(x, k):
    """relu(topk(x)) scattered into zeros with plain ops, whose backward autograd derives."""
    values, indices = torch.topk(x, k, dim=-1, sorted=False)  # (..., k) each
    return torch.zeros_like(x).scatter(-1, indices, F.relu(values))


class TopK(nn.Module):
    """Keep the k largest entries of the last dimension, ReLU them, zero the rest (Gao et al. 2024).
    Its output is the layer's sparse latent: hook it to read or edit neurons."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        if x.is_cuda and triton is not None and x.dtype != torch.float64:  # the kernel computes in float32
            return topk_relu_triton(x, self.k)
        if torch.compiler.is_compiling():
            # plain ops, whose backward torch.compile derives and fuses itself: on CUDA with bf16, the
            # compiled _TopKFunction trained far worse than eager (README "Speed", GPU)
            return topk_scatter(x, self.k)
        return _TopKFunction.apply(x, self.k)

    def extra_repr(self):
        return f'k={self.k}'


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1; kept as in nanoGPT)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """Keys and values of the tokens already seen, per layer, so each new token costs one position
    of attention instead of re-encoding the whole context. Preallocated to max_len (generate: block_size) on first use."""

    def __init__(self, n_layer, max_len):
        self.k = [None] * n_layer
        self.v = [None] * n_layer
        self.max_len = max_len
        self.pos = 0  # number of tokens already in the cache; GPT.forward advances it

    def update(self, layer, k, v):  # k, v: (B, nh, T, hs) for the T new tokens
        if self.k[layer] is None:
            B, nh, _, hs = k.shape
            self.k[layer] = k.new_empty(B, nh, self.max_len, hs)
            self.v[layer] = v.new_empty(B, nh, self.max_len, hs)
        end = self.pos + k.size(2)
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, nh, end, hs)


class CausalSelfAttention(nn.Module):

    def __init__(self, config, layer):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.layer = layer  # which slot of the KV cache is ours

    def forward(self, x, cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        mask, causal = None, True
        if cache is not None:
            past = cache.pos
            k, v = cache.update(self.layer, k, v)  # (B, nh, past + T, hs)
            if past > 0:  # new queries see every cached key plus the new keys up to themselves
                causal = False
                if T > 1:
                    mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.attn_dropout if self.training else 0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config, use_topk):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        if use_topk:  # the paper's TL;DR reading: TopK *is* the activation function
            self.topk = TopK(config.topk)
        else:
            self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)  # (B, T, 4C)
        h = self.topk(h) if hasattr(self, 'topk') else self.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):

    def __init__(self, config, layer):
        super().__init__()
        is_topk = config.is_topk_layer(layer)
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config, is_topk and config.topk_site == 'mlp')
        if is_topk and config.topk_site == 'resid':  # the paper's architecture figure: TopK after the block
            self.topk = TopK(config.topk)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return self.topk(x) if hasattr(self, 'topk') else x  # (B, T, C)


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying (Press & Wolf 2017), as in GPT-2 and nanoGPT
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        # absolute position of idx[:, 0] in the sequence being generated, for hooks that act on some
        # positions only (steer.py --positions); generate() sets it, training leaves it at 0
        self.start_pos = 0

    def get_num_params(self):
        """Parameters without the position embeddings (as nanoGPT counts them for MFU)."""
        return sum(p.numel() for p in self.parameters()) - self.transformer.wpe.weight.numel()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, cache=None):
        """idx (B, T) token ids. With targets (B, T): logits at every position and the mean loss
        (targets of -1 are ignored). Without: logits at the last position only, as nanoGPT."""
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"cannot forward {start + T} positions, block_size is {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, cache)
        if cache is not None:
            cache.pos += T
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)  # (B, T, vocab)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            return logits, loss
        return self.lm_head(x[:, [-1], :]), None  # (B, 1, vocab): the list index keeps the time dim

    def crop_block_size(self, block_size):
        """Shrink the context length, e.g. to finetune a checkpoint with a smaller block (nanoGPT)."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # decay the 2D weights (matmuls, embeddings), not the biases and LayerNorm gains (nanoGPT)
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
            {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0},
        ]
        # the fused kernel is one launch per step on CUDA; on CPU, fused, foreach and the plain loop
        # measured within noise of each other at the quick-start size, so torch picks
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=True if device_type == 'cuda' else None)

    def estimate_mfu(self, tokens_per_iter, dt):
        """Model FLOPs utilisation: achieved FLOP/s over the card's bf16 dense peak (PaLM paper,
        appendix B: 6N + 12*L*H*Q*T FLOPs per token). None when the card is not in PEAK_FLOPS."""
        peak = peak_flops()
        if peak is None or dt <= 0:
            return None
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        flops_per_token = 6 * self.get_num_params() + 12 * L * H * Q * T
        return flops_per_token * tokens_per_iter / dt / peak

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_cache=True, generator=None):
        """Continue idx (B, T) by max_new_tokens tokens. temperature=0 is greedy. With the KV cache
        each step feeds only the new token; once the sequence outgrows block_size every position
        embedding shifts, so the window is re-encoded each step, exactly as without the cache."""
        block_size = self.config.block_size
        cache = KVCache(self.config.n_layer, block_size) if use_cache else None
        for _ in range(max_new_tokens):
            if cache is not None and idx.size(1) <= block_size:
                self.start_pos = cache.pos
                logits, _ = self(idx[:, cache.pos:], cache=cache)  # the whole prompt first, then one token
            else:
                self.start_pos = max(0, idx.size(1) - block_size)
                logits, _ = self(idx[:, self.start_pos:])
            logits = logits[:, -1, :].float()  # (B, vocab)
            if temperature == 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float('inf')
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        self.start_pos = 0
        return idx


def topk_layers(model):
    """{layer index: TopK module} for the model's TopK sites; empty for a dense model."""
    found = {}
    for i, block in enumerate(model.transformer.h):
        site = block.topk if hasattr(block, 'topk') else getattr(block.mlp, 'topk', None)
        if site is not None:
            found[i] = site
    return found


def neuron_width(model):
    """Neurons per site: the residual width, or the MLP's hidden width for topk_site='mlp'."""
    cfg = model.config
    return 4 * cfg.n_embd if cfg.topk and cfg.topk_site == 'mlp' else cfg.n_embd


def neuron_sites(model):
    """{layer: module whose output holds that layer's neurons}. For a TopK model, its TopK modules. For
    a dense model (a base LM twin, or a nanoGPT checkpoint), the outputs of the blocks that would be
    TopK layers in the same config (at least the first), i.e. residual-stream coordinates, so the two
    can be compared."""
    sites = topk_layers(model)
    if sites or model.config.topk:
        return sites
    return {i: model.transformer.h[i] for i in range(max(1, model.config.n_layer - model.config.n_nontopk))}


@torch.no_grad()
def record_activations(model, idx, sites=None):
    """One forward pass of idx (B, T); returns {layer: (values, indices)} for each neuron site. TopK
    sites stay sparse as a TopK SAE stores its latents: values and indices (B, T, k). Dense sites
    come back whole: values (B, T, C) and indices None."""
    sites = neuron_sites(model) if sites is None else sites
    found = {}

    def keep(i, module):
        def hook(mod, inp, out):
            found[i] = out.topk(module.k, dim=-1, sorted=False) if isinstance(module, TopK) else (out, None)
        return hook

    hooks = [m.register_forward_hook(keep(i, m)) for i, m in sites.items()]
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    return {i: tuple(found[i]) for i in sites}


def keep_freed_memory():
    """Linux (glibc) only: keep freed blocks of up to 1 GiB in the process for the next step. By default
    glibc hands every block over 32 MB back to the kernel on free and maps fresh zeroed pages for the
    next, so a CPU training step with the GPT-2 vocabulary ((B, T, 50304) float32 logits: 155 MB at
    batch 12, block 64) spent half its time in the kernel; this made it 1.6x faster (README "Speed").
    The price: up to 1 GiB of freed memory stays with the process."""
    if sys.platform.startswith('linux'):
        mallopt = getattr(ctypes.CDLL(None), 'mallopt', None)  # None on musl; jemalloc/tcmalloc ignore it
        # M_MMAP_THRESHOLD (-3): blocks up to 1 GiB come from the heap; an old glibc refuses over 32 MB
        if mallopt is not None and mallopt(-3, 1 << 30):
            mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap instead of trimming it


def system_settings(device='auto', dtype='auto', compile='auto', threads=0):
    """Resolve the 'auto' settings: device cuda > mps > cpu; bfloat16 autocast on a CUDA GPU with native bf16,
    else float32; torch.compile on CUDA only. Returns (device, device_type, dtype, compile, autocast),
    autocast being the context to run the model under, or raises ValueError with what to do. It also
    sets torch's CPU threads (0 keeps the default), TF32 for float32 matmuls on CUDA (nanoGPT) and the
    current CUDA device, and on CPU keeps freed memory for reuse (keep_freed_memory)."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    if not re.fullmatch(r'cpu|mps|cuda(:\d+)?', device):
        raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, not {device!r}")
    device_type = 'cuda' if device.startswith('cuda') else device
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device {device} asked for, but torch sees no CUDA GPU: use --device=cpu")
    if device_type == 'cuda' and int(device.partition(':')[2] or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device} asked for, but torch sees {torch.cuda.device_count()} GPU(s): "
                         f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device_type == 'mps' and not torch.backends.mps.is_available():
        raise ValueError("device mps asked for, but this torch has no usable MPS backend: use --device=cpu")
    if device_type == 'cuda' and device != 'cuda':
        # cuda:N becomes the current GPU: synchronize, the bf16 check below, the card's name and its
        # peak FLOPs are then of this GPU
        torch.cuda.set_device(device)
    if dtype == 'auto':
        # native bf16 only (Ampere and later): a V100 or T4 only emulates it, with no bf16 tensor cores
        dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported(including_emulation=False) else 'float32'
    if dtype not in ('float32', 'bfloat16', 'float16'):
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, not {dtype!r}")
    if compile not in ('auto', True, False, 'True', 'False', 'true', 'false'):
        raise ValueError(f"compile must be auto, True or False, not {compile!r}")
    compile = device_type == 'cuda' if compile == 'auto' else compile in (True, 'True', 'true')
    if threads < 0:
        raise ValueError(f"threads must be 0 (torch's default) or more, not {threads}")
    if threads:
        torch.set_num_threads(threads)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device_type == 'cpu':
        keep_freed_memory()
    autocast = torch.autocast(device_type, dtype=getattr(torch, dtype)) if dtype != 'float32' else contextlib.nullcontext()
    return device, device_type, dtype, compile, autocast


# ----------------------------------------------------------------------------------------------
# peak dense bf16 FLOP/s of common cards (vendor data sheets; SXM parts unless named, no sparsity; V100
# and T4 have no bf16: theirs are fp16 tensor-core peaks, what --dtype=float16 runs at),
# matched as whole words of torch.cuda.get_device_name(), so that L4 is not an L40 nor A100 an A1000;
# nanochat keeps such a table instead of one card

PEAK_FLOPS = {
    'H200': 989e12, 'H100 PCIe': 756e12, 'H100 NVL': 835e12, 'H100': 989e12, 'A100': 312e12, 'A10G': 70e12,
    'A10': 125e12, 'L40S': 362e12, 'L40': 181e12, 'L4': 121e12, 'A6000': 155e12, 'RTX 4090': 165e12,
    'RTX 3090': 71e12, 'V100': 125e12, 'T4': 65e12,
}


def peak_flops(device_name=None):
    if device_name is None:
        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    for card, flops in PEAK_FLOPS.items():  # a part's name before its family's (H100 PCIe, H100)
        if re.search(rf'\b{card}\b', device_name):
            return flops
    return None


# ----------------------------------------------------------------------------------------------
# checkpoints: a dict with 'model' (uncompiled state_dict), 'model_args', 'iter_num', 'config' and
# 'tokenizer' (prepare.tokenizer_id: the vocabulary it was trained on); the resume checkpoint
# out_dir/ckpt.pt adds 'optimizer', 'scaler', 'rng', 'val_loss' and 'best_val_loss'; the series
# lives in out_dir/series/

def series_path(out_dir, iter_num):
    return os.path.join(out_dir, 'series', f'ckpt_{iter_num:07d}.pt')


def read_metrics(out_dir):
    """The rows of out_dir/metrics.jsonl ([] if none). A line torn by a crash in mid-write is skipped."""
    path = os.path.join(out_dir, 'metrics.jsonl')
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def checkpoint_series(out_dir):
    """[(iter_num, path)] of the run's checkpoint series, in training order."""
    found = [(re.search(r'ckpt_(\d+)\.pt$', p), p) for p in glob.glob(os.path.join(out_dir, 'series', 'ckpt_*.pt'))]
    return sorted((int(m.group(1)), p) for m, p in found if m)  # a file such as ckpt_best.pt is not of the series


def resolve_checkpoint(out_dir, ckpt=''):
    """'' -> the run's latest checkpoint (ckpt.pt); an integer -> that iteration of the series;
    anything else -> a path. Raises ValueError with what to do instead."""
    ckpt = str(ckpt)
    if os.path.isfile(out_dir):
        raise ValueError(f"--out_dir={out_dir} is a file: give the run's folder, or the file as --ckpt={out_dir}")
    if ckpt == '':
        path = os.path.join(out_dir, 'ckpt.pt')
        if not os.path.exists(path):
            raise ValueError(f"no checkpoint in {out_dir}/ (ckpt.pt): train one with "
                             f"`python train.py config/<a config>.py --out_dir={out_dir}`")
        return path
    if ckpt.isdigit():
        series = dict(checkpoint_series(out_dir))
        if int(ckpt) not in series:
            iters = ', '.join(map(str, series)) or 'none'
            raise ValueError(f"no checkpoint for iteration {ckpt} in {out_dir}/series/; available: {iters}")
        return series[int(ckpt)]
    if not os.path.exists(ckpt):
        raise ValueError(f"checkpoint {ckpt} does not exist")
    return ckpt


def load_checkpoint(path, device='cpu'):
    """Build the model stored at path (ours or nanoGPT's ckpt.pt). Returns (model, checkpoint dict), the
    model in eval mode (no dropout), ready to read, hook or sample, as a pretrained model loads elsewhere.
    weights_only=True: a checkpoint can carry tensors and plain values, never code."""
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path} is a folder: give a checkpoint file, as {os.path.join(path, 'ckpt.pt')}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        # nanoGPT may save the compiled module ('_orig_mod.' prefix) and, without flash attention,
        # a causal-mask buffer 'attn.bias' that this model does not need
        state = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items() if not k.endswith('.attn.bias')}
        args = ckpt['model_args']
    except Exception as e:  # truncated file, not a checkpoint, a pickle with code in it, ...
        raise ValueError(f"cannot read checkpoint {path}: it is truncated, or not a checkpoint of tensors and "
                         f"plain values ({type(e).__name__})") from None
    try:
        model = GPT(GPTConfig(**args))
        model.load_state_dict(state)
    except (TypeError, RuntimeError) as e:  # an unknown setting, a missing or reshaped weight
        raise ValueError(f"checkpoint {path} does not fit this model.py (was it saved by a changed one?): "
                         f"{str(e).strip().splitlines()[-1].strip()[:200]}") from None
    return model.to(device).eval(), ckpt
