"""Shared fixtures: a tiny prepared dataset and a helper to run the scripts as a user would."""
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import script_runner  # noqa: E402 (tests/ is on the path: pytest puts it there)


def strict_json(path):
    """The file parsed as strict JSON: a bare NaN or Infinity, which json.loads accepts, fails."""
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {path}"))

# tiny sizes that train in seconds on a CPU
TINY = ['--device=cpu', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=4',
        '--eval_iters=2', '--log_interval=1', '--dropout=0.0', '--warmup_iters=2', '--threads=1']


# each run is a new process, forked from a server with torch already imported (script_runner.py); on
# Linux only, as forking after such imports is not safe on macOS (where Python itself spawns by default)
FORKSERVER = sys.platform.startswith('linux')
if FORKSERVER:
    multiprocessing.set_forkserver_preload(script_runner.PRELOAD + ['script_runner'])


def run(script, *args, cwd=None):
    """Run one of the project's scripts; returns the CompletedProcess (text output)."""
    path, argv, cwd = os.path.join(ROOT, script), list(map(str, args)), cwd or ROOT
    cmd = [sys.executable, path, *argv]
    if not FORKSERVER:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    with tempfile.TemporaryDirectory() as d:
        out, err = os.path.join(d, 'stdout'), os.path.join(d, 'stderr')
        for f in (out, err):
            open(f, 'w').close()
        p = multiprocessing.get_context('forkserver').Process(target=script_runner.main,
                                                              args=(path, argv, cwd, dict(os.environ), out, err))
        p.start()
        try:
            p.join()
        finally:  # as subprocess.run, leave no run behind when the wait is interrupted
            if p.is_alive():
                p.kill()
                p.join()
        with open(out) as o, open(err) as e:
            return subprocess.CompletedProcess(cmd, p.exitcode, o.read(), e.read())


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
