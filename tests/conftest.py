"""Shared fixtures: a tiny prepared dataset and a helper to run the scripts as a user would."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# tiny sizes that train in seconds on a CPU
TINY = ['--device=cpu', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=4',
        '--eval_iters=2', '--log_interval=1', '--dropout=0.0', '--warmup_iters=2', '--threads=1']


def run(script, *args, cwd=None):
    """Run one of the project's scripts; returns the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
    """A small planted-concept corpus, prepared once per test session."""
    d = tmp_path_factory.mktemp('data')
    r = run('prepare.py', 'concepts', f'--data_dir={d}', '--concept_sentences=3000')
    assert r.returncode == 0, r.stderr
    return str(d)


@pytest.fixture(scope='session')
def concepts_run(tmp_path_factory, data_dir):
    """A small TopK model trained on the concepts corpus (seeded, ~20 s), with its checkpoint series:
    big enough to learn the concepts, the thing steer.py and analyze.py are tested on."""
    out = str(tmp_path_factory.mktemp('concepts-run'))
    r = run('train.py', '--dataset=concepts', f'--data_dir={data_dir}', f'--out_dir={out}', '--device=cpu',
            '--n_layer=2', '--n_head=2', '--n_embd=64', '--block_size=32', '--batch_size=16', '--topk=8',
            '--n_nontopk=1', '--dropout=0.0', '--max_iters=300', '--lr_decay_iters=300', '--learning_rate=3e-3',
            '--min_lr=3e-4', '--warmup_iters=20', '--eval_interval=100', '--eval_iters=5', '--ckpt_interval=100',
            '--log_interval=50')
    assert r.returncode == 0, r.stderr
    return out
