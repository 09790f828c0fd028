"""
Generate text from a trained model.

    python sample.py --out_dir=out-shakespeare-char-topk
    python sample.py --out_dir=out-concepts-topk --start="the farmer" --ckpt=64   # a series checkpoint
    python sample.py --out_dir=out --start=FILE:prompt.txt
"""

import os

import torch

from configurator import configure, die
from model import load_checkpoint, resolve_checkpoint, system_settings
from prepare import get_tokenizer, load_meta, vocab_fits

# -----------------------------------------------------------------------------
out_dir = 'out'  # the run to sample from
ckpt = ''  # '' = the latest (ckpt.pt), an iteration of the series (e.g. 512), or a checkpoint path
start = '\n'  # the prompt; FILE:path reads it from a file
num_samples = 3  # samples to draw
max_new_tokens = 300  # tokens generated per sample
temperature = 0.8  # 1.0 = as the model predicts, lower = more conservative, 0 = greedy
top_k = 200  # sample only among the top_k most likely tokens; 0 = all
seed = 1337  # seeds the sampling
device = 'auto'  # 'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'mps'
threads = 0  # CPU threads for torch; 0 keeps torch's default (one per core)
use_cache = True  # the KV cache; False re-encodes the whole context for every token
data_dir = ''  # where the run's dataset (its tokenizer) lives; '' = where it was trained from
# -----------------------------------------------------------------------------


def load_run(out_dir, ckpt='', device='auto', data_dir='', threads=0):
    """The model (in eval mode, on device), its checkpoint dict and its tokenizer's (encode, decode),
    or a one-line exit that says what to do. data_dir '' = where the run was trained from."""
    try:
        device = system_settings(device, threads=threads)[0]
        model, checkpoint = load_checkpoint(resolve_checkpoint(out_dir, ckpt), device)
        config = checkpoint.get('config', {})
        checkpoint['config'] = dict(config, data_dir=data_dir or config.get('data_dir', 'data'))
        meta = load_meta(config.get('dataset', ''), checkpoint['config']['data_dir'])
        if not vocab_fits(meta, checkpoint, model.config.vocab_size):
            raise ValueError(f"dataset {config['dataset']} has another vocabulary than the one this run was trained "
                             "on (prepared again from other text, or other data of that name?): give --data_dir=DIR "
                             "where its dataset is, prepare it as it was, or train again")
        encode, decode = get_tokenizer(meta)
    except ValueError as e:
        die(str(e))
    return model, checkpoint, encode, decode


def encode_prompt(encode, text):
    if text.startswith('FILE:'):
        path = text[5:]
        if not os.path.isfile(path):
            die(f"prompt file {path!r} {'is a folder' if os.path.isdir(path) else 'not found'}: give --start=FILE:PATH "
                "of a text file")
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except UnicodeDecodeError:
            die(f"prompt file {path} is not UTF-8 text: save it as UTF-8")
    try:
        ids = encode(text)
    except ValueError as e:
        die(f"the prompt cannot be encoded: {e}")
    if not ids:
        die("the prompt is empty: give at least one token with --start")
    return ids


def check_sampling(temperature, top_k):
    """A one-line exit for sampling settings that generate() cannot use."""
    if temperature < 0 or top_k < 0:
        die(f"--temperature and --top_k must be 0 or more (0: greedy, and all tokens), not {temperature} and {top_k}")


if __name__ == '__main__':
    configure(globals())
    check_sampling(temperature, top_k)
    if num_samples < 1 or max_new_tokens < 1:
        die(f"--num_samples and --max_new_tokens must be 1 or more, not {num_samples} and {max_new_tokens}")
    model, checkpoint, encode, decode = load_run(out_dir, ckpt, device, data_dir, threads)
    x = torch.tensor([encode_prompt(encode, start)], dtype=torch.long, device=model.lm_head.weight.device)
    print(f"# {out_dir}, iteration {checkpoint.get('iter_num')}"
          + (f", val loss {checkpoint['val_loss']:.4f}" if 'val_loss' in checkpoint else ''))
    torch.manual_seed(seed)
    for _ in range(num_samples):
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None, use_cache=use_cache)
        print(decode(y[0].tolist()))
        print('---------------')
