"""
Train a TopK LM (or, with topk=0, a plain GPT) on one GPU or a CPU.

    python train.py config/train_concepts_topk.py
    python train.py config/train_shakespeare_char_topk.py --device=cpu --max_iters=2000
    python train.py config/train_concepts_topk.py --init_from=resume   # continue exactly where it stopped

Writes to out_dir: ckpt.pt (the resume checkpoint: model, optimizer, RNG states), series/ckpt_NNNNNNN.pt
(model-only snapshots at iterations 0, 1, 2, 4, ..., series_log_max, every ckpt_interval and the last, for
evolution analysis), and metrics.jsonl (every logged row). The loop follows nanoGPT's train.py.
"""

import json
import math
import os
import sys
import time

import torch

from configurator import check_folder, configure, die
from model import (GPT, GPTConfig, checkpoint_series, load_checkpoint, read_metrics, series_path, system_settings,
                   topk_layers)
from prepare import get_batch, load_meta, open_split, tokenizer_id, vocab_fits

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'  # where checkpoints and metrics.jsonl go
eval_interval = 250  # evaluate, log the eval row and write ckpt.pt every this many iterations
log_interval = 10  # print and log the training loss every this many iterations
eval_iters = 100  # batches per split in each evaluation
eval_only = False  # evaluate once and exit
init_from = 'scratch'  # 'scratch', 'resume' (out_dir/ckpt.pt), or a path to a checkpoint to start from
overwrite = False  # replace a run already in out_dir (for any init_from but resume)
ckpt_interval = 1000  # series checkpoints every this many iterations (after the log-spaced early ones)
series_log_max = 512  # log-spaced series checkpoints at 0, 1, 2, 4, ... up to this iteration
series = True  # write the checkpoint series at all
# data
dataset = 'shakespeare_char'  # a folder of data_dir made by prepare.py
data_dir = 'data'  # where prepare.py wrote the datasets
gradient_accumulation_steps = 1  # micro-batches per optimizer step
batch_size = 64  # sequences per micro-batch
block_size = 256  # context length
# model
n_layer = 6  # transformer blocks
n_head = 6  # attention heads per block
n_embd = 384  # width of the residual stream
dropout = 0.2  # dropout probability (0 for pretraining, a little for small data)
bias = False  # bias in Linears and LayerNorms
topk = 32  # k entries kept at each TopK layer; 0 = dense twin (same shape, no TopK)
n_nontopk = 2  # number of final blocks kept dense
topk_site = 'resid'  # 'resid' (the block's output, the paper's figure) or 'mlp' (replaces GELU)
# optimizer: AdamW with warmup and cosine decay
learning_rate = 1e-3  # peak learning rate
max_iters = 5000  # total optimizer steps
weight_decay = 0.1  # on 2D weights only
beta1 = 0.9  # AdamW beta1
beta2 = 0.99  # AdamW beta2 (0.99 suits small batches, nanoGPT's char config)
grad_clip = 1.0  # clip gradients at this norm; 0 disables
decay_lr = True  # warmup then cosine decay; False keeps learning_rate
warmup_iters = 100  # linear warmup steps
lr_decay_iters = 5000  # cosine decay ends here (usually max_iters)
min_lr = 1e-4  # learning rate after the decay (about learning_rate / 10)
# system
device = 'auto'  # 'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bfloat16 on a CUDA GPU with native bf16, else float32), 'float32', 'bfloat16', 'float16'
compile = 'auto'  # torch.compile the model: 'auto' (on CUDA only), True or False
seed = 1337  # seeds the weights, the batches and dropout
threads = 0  # CPU threads for torch; 0 keeps torch's default (one per core)
# -----------------------------------------------------------------------------
given = set()
config = configure(globals(), given=given)
MACHINE_KEYS = ('device', 'compile', 'threads', 'init_from', 'overwrite', 'eval_only', 'out_dir')
for key in ('eval_interval', 'log_interval', 'ckpt_interval', 'eval_iters', 'batch_size', 'block_size',
            'gradient_accumulation_steps'):
    if config[key] < 1:
        die(f"--{key} must be 1 or more, not {config[key]}")
for key in ('max_iters', 'warmup_iters', 'lr_decay_iters', 'learning_rate', 'min_lr', 'weight_decay', 'grad_clip',
            'dropout'):
    if not 0 <= config[key] < math.inf:  # a negative --grad_clip would flip the gradients and climb the loss
        die(f"--{key} must be a finite number, 0 or more, not {config[key]}")
if not (0 <= beta1 < 1 and 0 <= beta2 < 1 and dropout < 1):
    die(f"--beta1 and --beta2 must be in [0, 1) and --dropout below 1, not {beta1}, {beta2} and {dropout}")
if overwrite and init_from == 'resume' and not eval_only:
    die("--init_from=resume continues the run in --out_dir and --overwrite=True replaces it: give one of them")
if eval_only and init_from == 'scratch':
    die("--eval_only evaluates a checkpoint: add --init_from=resume (the run in --out_dir) or --init_from=PATH")
if not out_dir:
    die("--out_dir is empty: give a folder")
check_folder(out_dir, 'out_dir')  # found now, not after loading the data and the model

# the settings a checkpoint was trained with, for those not given again now: a resumed run and an
# --eval_only take all but the machine's, so `--init_from=resume --out_dir=DIR` is enough; the
# precision comes too (on CPU 'auto' means float32, so a bfloat16 run would otherwise resume in
# float32 and not reproduce itself). A new run from a checkpoint (a fine-tune, perhaps of a nanoGPT
# checkpoint) takes only its data and context length: the training recipe is the new run's
resume_path = os.path.join(out_dir, 'ckpt.pt')
checkpoint = None
if init_from != 'scratch':
    path = resume_path if init_from == 'resume' else init_from
    if not os.path.exists(path):
        die(f"no checkpoint at {path} to {'resume' if init_from == 'resume' else 'start'} from")
    try:
        model, checkpoint = load_checkpoint(path)
        model.train()  # loaded in eval mode, for reading
    except ValueError as e:
        die(str(e))
    if init_from == 'resume' and not {'optimizer', 'scaler', 'rng'} <= set(checkpoint):
        die(f"{path} is not a resume checkpoint of this train.py (no optimizer or RNG state): "
            f"start a new run from it with --init_from={path} --out_dir=NEW_DIR")
    old = checkpoint.get('config', {})
    keys = set(old) - set(MACHINE_KEYS) if init_from == 'resume' or eval_only else {'dataset', 'data_dir', 'block_size'}
    for k in (keys & set(old) & set(config)) - given:  # a setting this command gives wins
        globals()[k] = config[k] = old[k]

try:
    device, device_type, dtype, compile, autocast = system_settings(device, dtype, compile, threads)
except ValueError as e:
    die(str(e))
config.update(device=device, dtype=dtype, compile=compile)  # record what actually ran
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size

# data: memmaps opened once; batches come from our own generator, whose state a resume restores
try:
    meta = load_meta(dataset, data_dir)
except ValueError as e:
    die(str(e))
vocab_id = tokenizer_id(meta)  # kept in every checkpoint, so none is trained or read with other token ids
data_id = {k: meta.get(k) for k in ('source', 'train_tokens', 'val_tokens')}  # in resume checkpoints: which data
train_data, val_data = open_split(dataset, 'train', data_dir), open_split(dataset, 'val', data_dir)
if min(len(train_data), len(val_data)) <= block_size:
    die(f"dataset {dataset} has a split of {min(len(train_data), len(val_data))} tokens, too short for "
        f"block_size {block_size}: lower --block_size")
torch.manual_seed(seed)  # weights and dropout
data_gen = torch.Generator().manual_seed(seed)  # training batches

# -----------------------------------------------------------------------------
# model and optimizer: from scratch, resumed, or initialised from another checkpoint (ours or nanoGPT's)
metrics_path = os.path.join(out_dir, 'metrics.jsonl')
iter_num, val_loss, best_val_loss = 0, float('nan'), float('inf')
if init_from != 'resume':
    held = os.path.exists(resume_path) or checkpoint_series(out_dir) or os.path.exists(metrics_path)
    if held and not overwrite and not eval_only:
        die(f"{out_dir}/ already holds a run: --init_from=resume continues it, --overwrite=True replaces it, "
            "or choose another --out_dir")
if init_from == 'scratch':
    vocab_size = 50304 if meta['tokenizer'] == 'gpt2' else meta['vocab_size']  # GPT-2's vocab padded to x64
    model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias,
                      vocab_size=vocab_size, dropout=dropout, topk=topk, n_nontopk=n_nontopk, topk_site=topk_site)
    try:
        gptconf = GPTConfig(**model_args)
    except ValueError as e:
        die(str(e))
    if topk and n_nontopk >= n_layer:  # a dense model recorded as TopK: analyze and steer would find no site
        die(f"topk={topk} with n_nontopk={n_nontopk} of n_layer={n_layer} leaves no TopK layer: lower --n_nontopk, "
            "or give --topk=0 for a dense model")
    model = GPT(gptconf)
else:
    if block_size > model.config.block_size:
        die(f"the checkpoint has block_size {model.config.block_size}; use --block_size={model.config.block_size} or less")
    if not vocab_fits(meta, checkpoint, model.config.vocab_size):
        die(f"{path} was trained with another vocabulary than dataset {dataset}'s, so its token ids would mean other "
            f"tokens (it has {model.config.vocab_size} ids, the dataset {meta['vocab_size']}): start from a checkpoint "
            "trained on this dataset's tokenizer, or from scratch")
    if block_size < model.config.block_size:
        if init_from == 'resume' and not eval_only:  # the optimizer's state for position embeddings has the old length
            die(f"a resumed run keeps block_size {model.config.block_size}: to train with --block_size={block_size}, "
                f"start a new run from it with --init_from={resume_path} --out_dir=NEW_DIR")
        model.crop_block_size(block_size)
    model.config.dropout = dropout  # the one model setting that may change between runs, so set it everywhere
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = dropout
        elif hasattr(m, 'attn_dropout'):
            m.attn_dropout = dropout
    model_args = {k: getattr(model.config, k) for k in GPTConfig.__dataclass_fields__}
    for k in ('n_layer', 'n_head', 'n_embd', 'bias', 'topk', 'n_nontopk', 'topk_site'):
        if k in given and config[k] != model_args[k]:
            print(f"note: {k}={model_args[k]} comes from the checkpoint; --{k}={config[k]} is ignored")
    if init_from == 'resume' and not eval_only:  # the same batches must follow, or it is not the run continued
        then = checkpoint.get('data', data_id)  # a checkpoint from before this was recorded: not checked
        changed = [f"{k} {then.get(k)!r} then, {v!r} now" for k, v in data_id.items() if then.get(k) != v]
        if changed:
            die(f"dataset {dataset} was prepared again since this run's checkpoint ({'; '.join(changed)}): prepare "
                f"it as it was, or start a new run from it with --init_from={resume_path} --out_dir=NEW_DIR")
    if init_from == 'resume' or eval_only:  # an evaluation reports the checkpoint's own iteration
        iter_num = checkpoint.get('iter_num', 0)
    if init_from == 'resume':
        val_loss = checkpoint.get('val_loss', float('nan'))
        best_val_loss = checkpoint.get('best_val_loss', float('inf'))
model.to(device)
config.update(model_args)  # record the model that actually ran
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
if init_from == 'resume':
    optimizer.load_state_dict(checkpoint['optimizer'])
    for group in optimizer.param_groups:  # the loaded groups hold the old settings; those given now win
        group['betas'] = (beta1, beta2)
    optimizer.param_groups[0]['weight_decay'] = weight_decay  # the decayed group (configure_optimizers)
    if scaler.is_enabled() and checkpoint['scaler']:  # a float32 or bf16 run saved a disabled scaler: {}
        scaler.load_state_dict(checkpoint['scaler'])
    # the RNG states of the moment the checkpoint was written: the same batches and dropout follow
    torch.set_rng_state(checkpoint['rng']['torch'])
    data_gen.set_state(checkpoint['rng']['data'])
    if device_type == 'cuda' and 'cuda' in checkpoint['rng']:
        torch.cuda.set_rng_state(checkpoint['rng']['cuda'], device)
    # metrics rows and series snapshots from after the checkpoint belong to a stretch of training that is
    # being redone: left, they would mix two runs in analyze.py's evolution once this one takes other
    # settings or stops earlier
    if not eval_only:
        if os.path.exists(metrics_path):
            rows = read_metrics(out_dir)
            keep = [r for r in rows if r['iter'] < iter_num or (r['iter'] == iter_num and r['kind'] == 'eval')]
            with open(metrics_path + '.tmp', 'w') as f:
                f.writelines(json.dumps(r) + '\n' for r in keep)
            os.replace(metrics_path + '.tmp', metrics_path)
        redone = [p for i, p in checkpoint_series(out_dir) if i > iter_num]
        for p in redone:
            os.remove(p)
        if redone:
            print(f"note: removed {len(redone)} series checkpoint(s) from after iteration {iter_num}, the one resumed from")
if overwrite and init_from != 'resume' and not eval_only:
    # only now that every setting has been checked: a fresh run must not inherit the old one's files
    for p in [p for _, p in checkpoint_series(out_dir)] + [resume_path, metrics_path]:
        if os.path.exists(p):
            os.remove(p)
    reports = [d for d in ('analysis', 'steer') if os.path.isdir(os.path.join(out_dir, d))]  # kept: not ours to delete
    if reports:
        print(f"note: reports on the replaced run stay in {' and '.join(f'{out_dir}/{d}/' for d in reports)}")
if not eval_only:  # an evaluation writes nothing
    os.makedirs(out_dir, exist_ok=True)
checkpoint = None  # free memory
raw_model = model  # checkpoints store the uncompiled module: no '_orig_mod.' prefix in the keys
if compile:
    print("compiling the model... (takes a ~minute)")
    model = torch.compile(model)
sites = topk_layers(raw_model)
print(f"{raw_model.get_num_params() / 1e6:.2f}M parameters, TopK layers {list(sites) or 'none (dense)'}"
      f"{f', k={raw_model.config.topk} at {raw_model.config.topk_site}' if sites else ''}; "
      f"{tokens_per_iter:,} tokens per iteration; device {device}, {dtype}{', compiled' if compile else ''}")


# -----------------------------------------------------------------------------
def save(path, obj):
    """Write to a temp file, flush it to disk, then rename: neither a crash nor a power loss mid-write
    leaves a torn checkpoint."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + '.tmp', 'wb') as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + '.tmp', path)


def log(row):
    with open(metrics_path, 'a') as f:
        f.write(json.dumps(row) + '\n')


@torch.no_grad()
def estimate_loss():
    """Mean loss over the same eval_iters batches of each split every time (a fixed generator keeps
    checkpoints comparable and leaves the training RNG alone), and for each TopK layer the fraction
    of dead neurons: those never non-zero over those eval_iters val batches (the SAE notion of a
    dead latent, over a window of eval_iters * batch_size * block_size tokens)."""
    fired = {}  # TopK layer -> (width,) bool

    def record(i):
        def hook(module, inp, out):
            seen = out.reshape(-1, out.size(-1)).ne(0).any(0)
            fired[i] = fired[i] | seen if i in fired else seen
        return hook

    model.eval()
    out = {}
    for split, data in (('train', train_data), ('val', val_data)):
        # val runs the uncompiled module, so adding hooks costs no recompilation
        net = raw_model if split == 'val' else model
        hooks = [m.register_forward_hook(record(i)) for i, m in sites.items()] if split == 'val' else []
        gen = torch.Generator().manual_seed(seed + 1)
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(data, block_size, batch_size, gen, device)
            with autocast:
                _, loss = net(X, Y)
            losses[k] = loss.item()
        for h in hooks:
            h.remove()
        out[split] = losses.mean().item()
    out['dead'] = {i: round(1 - f.float().mean().item(), 4) for i, f in fired.items()}
    model.train()
    return out


def get_lr(it):
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters (nanoGPT)."""
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:  # also where warmup ends at lr_decay_iters, which would divide by zero below
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def in_series(it):
    """0, 1, 2, 4, ..., series_log_max, then every ckpt_interval: concepts form early, so the
    early snapshots are dense in time (README, Training)."""
    return it == 0 or (it <= series_log_max and it & (it - 1) == 0) or it % ckpt_interval == 0


def stop_if_nonfinite(value, it, what='the loss'):
    if not math.isfinite(value):
        last = f"ckpt.pt holds iteration {ckpt_iter}" if ckpt_iter is not None else "no checkpoint was written"
        print(f"stopping: {what} became {value} at iteration {it}; {last}. "
              "Try a lower --learning_rate, a longer --warmup_iters or --grad_clip=1.0", file=sys.stderr)
        sys.exit(1)


# -----------------------------------------------------------------------------
# the loop. Each iteration: evaluate and checkpoint (every eval_interval), snapshot the series, then
# one optimizer step. The resume checkpoint is written before the step of its iteration with the RNG
# states of that moment, so a resumed run draws the same batches and dropout masks as an
# uninterrupted one and reaches the same weights (tests/test_train.py checks it).
resumed_at = iter_num if init_from == 'resume' else None
ckpt_iter = iter_num if init_from == 'resume' else None  # the iteration ckpt.pt holds
first_iter = iter_num  # where this process started: a resumed run compiles again
t0 = time.time()
running_mfu = -1.0
span_time, span_iters = 0.0, 0  # training time and steps since the last eval: its ms/iter, tokens/s and MFU
while True:
    lr = get_lr(iter_num)
    for group in optimizer.param_groups:
        group['lr'] = lr

    if eval_only or (iter_num % eval_interval == 0 or iter_num == max_iters) and iter_num != resumed_at:
        losses = estimate_loss()
        val_loss = losses['val']
        stop_if_nonfinite(val_loss, iter_num)
        dead = ' '.join(f"L{i} {d:.2f}" for i, d in losses['dead'].items())
        speed = {}  # none before the first step
        if span_iters:
            step_s = span_time / span_iters
            speed = dict(ms_per_iter=step_s * 1000, tokens_per_s=tokens_per_iter / step_s,
                         mfu=raw_model.estimate_mfu(tokens_per_iter, step_s) if device_type == 'cuda' else None)
        span_time, span_iters = 0.0, 0
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, lr {lr:.2e}"
              + (f", dead fraction {dead}" if dead else '')
              + (f", {speed['ms_per_iter']:.1f}ms/iter since the last eval" if speed else ''))
        if eval_only:
            break
        best_val_loss = min(best_val_loss, val_loss)
        log(dict(kind='eval', iter=iter_num, train_loss=losses['train'], val_loss=losses['val'], lr=lr,
                 dead={str(i): d for i, d in losses['dead'].items()}, **speed))
        rng = {'torch': torch.get_rng_state(), 'data': data_gen.get_state()}
        if device_type == 'cuda':
            rng['cuda'] = torch.cuda.get_rng_state(device)
        save(resume_path, dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(),
                               scaler=scaler.state_dict(), model_args=model_args, iter_num=iter_num,
                               val_loss=val_loss, best_val_loss=best_val_loss, config=config, rng=rng,
                               tokenizer=vocab_id, data=data_id))
        ckpt_iter = iter_num
        t0 = time.time()  # ms/iter measures training, not evaluation
    if series and (in_series(iter_num) or iter_num == max_iters):
        if iter_num != resumed_at and iter_num > 0:  # never snapshot weights that a non-finite step made
            stop_if_nonfinite(step_loss.item(), iter_num - 1)
            # a finite loss can still leave NaN weights: an infinite gradient times clipping's 0
            if not all(p.isfinite().all() for p in raw_model.parameters()):
                stop_if_nonfinite(math.nan, iter_num - 1, 'a weight')
        save(series_path(out_dir, iter_num), dict(model=raw_model.state_dict(), model_args=model_args,
                                                  iter_num=iter_num, config=config, tokenizer=vocab_id))
        t0 = time.time()
    if iter_num >= max_iters:
        break

    # one optimizer step over gradient_accumulation_steps micro-batches
    step_loss = 0.0  # the step's loss: the mean over its micro-batches (nanoGPT logs the last one's)
    for micro_step in range(gradient_accumulation_steps):
        X, Y = get_batch(train_data, block_size, batch_size, data_gen, device)
        with autocast:
            _, loss = model(X, Y)
            loss = loss / gradient_accumulation_steps  # the mean over micro-batches, as one big batch
        scaler.scale(loss).backward()
        step_loss += loss.detach()
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)

    t1 = time.time()
    dt, t0 = t1 - t0, t1
    if not (compile and iter_num - first_iter < 5):  # the first steps of a compiled run include compilation
        span_time, span_iters = span_time + dt, span_iters + 1
    if iter_num % log_interval == 0:
        lossf = step_loss.item()  # a CPU-GPU sync, so only every log_interval
        stop_if_nonfinite(lossf, iter_num)
        mfu = raw_model.estimate_mfu(tokens_per_iter, dt) if device_type == 'cuda' else None
        if mfu is not None and iter_num - first_iter >= 5:  # the first iterations include compilation or warm-up
            running_mfu = mfu if running_mfu < 0 else 0.9 * running_mfu + 0.1 * mfu
        print(f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.1f}ms, {tokens_per_iter / dt:,.0f} tok/s"
              + (f", mfu {running_mfu * 100:.1f}%" if running_mfu >= 0 else ''))
        log(dict(kind='train', iter=iter_num, loss=lossf, lr=lr, ms_per_iter=dt * 1000, tokens_per_s=tokens_per_iter / dt,
                 mfu=running_mfu if running_mfu >= 0 else None))
    iter_num += 1

if not eval_only:
    print(f"done: {out_dir}/ckpt.pt at iteration {iter_num}, val loss {val_loss:.4f}")
