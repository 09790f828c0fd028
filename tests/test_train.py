"""Claims of train.py and sample.py, run as a user runs them: a checkpoint series, metrics, exact
resume, no silent overwrite, a clean stop on a non-finite loss, and sampling from any checkpoint."""
import json
import os

import pytest
import torch

from conftest import ROOT, TINY, run
from model import checkpoint_series, topk_layers


def train(out, data_dir, *extra):
    r = run('train.py', '--dataset=concepts', f'--data_dir={data_dir}', f'--out_dir={out}', *TINY,
            '--topk=8', '--n_nontopk=1', *extra)
    return r


def rows(out, kind):
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        return [r for r in map(json.loads, f) if r['kind'] == kind]


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, data_dir):
    """12 iterations in one go, with dropout so the resume must restore the RNG too."""
    out = str(tmp_path_factory.mktemp('full'))
    r = train(out, data_dir, '--max_iters=12', '--lr_decay_iters=12', '--eval_interval=4', '--dropout=0.1')
    assert r.returncode == 0, r.stderr
    return out


def test_training_writes_a_log_spaced_series_and_metrics(full_run):
    assert [i for i, _ in checkpoint_series(full_run)] == [0, 1, 2, 4, 8, 12]
    evals = rows(full_run, 'eval')
    assert [r['iter'] for r in evals] == [0, 4, 8, 12]
    assert set(evals[-1]['dead']) == {'0'} and 0 <= evals[-1]['dead']['0'] <= 1  # one TopK layer
    assert evals[-1]['val_loss'] < evals[0]['val_loss']
    trains = rows(full_run, 'train')
    assert [r['iter'] for r in trains] == list(range(12))
    assert 'ms_per_iter' not in evals[0]  # no step before the first eval
    # the schedule (nanoGPT's): linear warmup over 2 steps, then cosine from learning_rate to min_lr at 12
    cfg = torch.load(os.path.join(full_run, 'ckpt.pt'), weights_only=True)['config']
    lr, low = cfg['learning_rate'], cfg['min_lr']
    assert trains[0]['lr'] == pytest.approx(lr / 3) and trains[1]['lr'] == pytest.approx(2 * lr / 3)
    assert trains[2]['lr'] == pytest.approx(lr) and trains[7]['lr'] == pytest.approx((lr + low) / 2)  # halfway
    assert [t['lr'] for t in trains[2:]] == sorted([t['lr'] for t in trains[2:]], reverse=True) and low < trains[11]['lr']
    assert evals[1]['lr'] == trains[4]['lr']
    for e, steps in ((evals[1], trains[0:4]), (evals[2], trains[4:8])):  # the steps since the eval before
        assert e['ms_per_iter'] == pytest.approx(sum(t['ms_per_iter'] for t in steps) / 4)
        tokens_per_iter = steps[0]['tokens_per_s'] * steps[0]['ms_per_iter'] / 1000
        assert e['tokens_per_s'] == pytest.approx(tokens_per_iter * 1000 / e['ms_per_iter'])
    ckpt = torch.load(os.path.join(full_run, 'series', 'ckpt_0000004.pt'), weights_only=True)
    assert set(ckpt) == {'model', 'model_args', 'iter_num', 'config', 'tokenizer'}  # small: no optimizer
    assert not any(k.startswith('_orig_mod.') for k in ckpt['model'])
    assert ckpt['config']['max_iters'] == 12 and ckpt['model_args']['topk'] == 8


def test_the_dead_fraction_is_the_share_of_neurons_never_active_over_the_eval_batches(full_run, data_dir, tmp_path):
    from model import load_checkpoint
    from prepare import get_batch, open_split
    model, ck = load_checkpoint(os.path.join(full_run, 'ckpt.pt'))
    cfg = ck['config']
    gen = torch.Generator().manual_seed(cfg['seed'] + 1)  # the eval's own val batches
    batches = [get_batch(open_split('concepts', 'val', data_dir), cfg['block_size'], cfg['batch_size'], gen)[0]
               for _ in range(cfg['eval_iters'])]
    rare = next(t for t in batches[0].unique().tolist() if not any((b == t).any() for b in batches[1:]))  # in the first batch only
    # plant 8 dead neurons of 32, and one that fires on the rare token alone: residual coordinates 0-8 start
    # far below the rest (coordinate 8 far above at that token) and no layer writes them
    with torch.no_grad():
        model.transformer.wte.weight[:, :9] = -20  # (vocab, C)
        model.transformer.wte.weight[rare, 8] = 20
        model.transformer.wpe.weight[:, :9] = 0
        for block in model.transformer.h:
            block.attn.c_proj.weight[:9] = block.mlp.c_proj.weight[:9] = 0  # no biases: bias=False
    path = str(tmp_path / 'dead.pt')
    torch.save({**ck, 'model': model.state_dict()}, path)
    r = run('train.py', f'--init_from={path}', '--eval_only=True', '--device=cpu', '--threads=1',
            f'--data_dir={data_dir}', f'--out_dir={tmp_path}')
    assert r.returncode == 0, r.stderr
    fired = torch.zeros(model.config.n_embd, dtype=torch.bool)

    def record(module, inp, out):
        fired.__ior__(out.ne(0).flatten(0, 1).any(0))  # (C,): active on any token of the batch
    hook = topk_layers(model)[0].register_forward_hook(record)
    with torch.no_grad():
        for x in batches:
            model(x)
    hook.remove()
    dead = 1 - fired.float().mean().item()
    assert not fired[:8].any() and fired[8] and dead >= 0.25
    assert f'dead fraction L0 {dead:.2f}' in r.stdout


def test_a_resumed_run_reproduces_the_uninterrupted_one(full_run, tmp_path, data_dir):
    out = str(tmp_path)
    r = train(out, data_dir, '--max_iters=6', '--lr_decay_iters=12', '--eval_interval=4', '--dropout=0.1')
    assert r.returncode == 0, r.stderr
    # continue with only what changes: the rest of the settings come from the checkpoint
    r = run('train.py', f'--out_dir={out}', '--init_from=resume', '--max_iters=12', '--device=cpu', '--threads=1')
    assert r.returncode == 0, r.stderr
    a = torch.load(os.path.join(full_run, 'series', 'ckpt_0000012.pt'), weights_only=True)['model']
    b = torch.load(os.path.join(out, 'series', 'ckpt_0000012.pt'), weights_only=True)['model']
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [(x['iter'], x['loss']) for x in rows(full_run, 'train')] == [(x['iter'], x['loss']) for x in rows(out, 'train')]


@pytest.mark.parametrize('start', ['scratch', 'a checkpoint'])
def test_a_new_run_never_overwrites_an_old_one(full_run, data_dir, start):
    before = os.path.getmtime(os.path.join(full_run, 'ckpt.pt'))
    extra = [] if start == 'scratch' else [f"--init_from={os.path.join(full_run, 'series', 'ckpt_0000004.pt')}"]
    r = train(full_run, data_dir, '--max_iters=2', *extra)
    assert r.returncode == 2 and 'already holds a run' in r.stderr and r.stderr.count('\n') == 1
    assert os.path.getmtime(os.path.join(full_run, 'ckpt.pt')) == before


def test_overwrite_with_a_bad_setting_keeps_the_old_run(tmp_path, data_dir):
    out = str(tmp_path)
    assert train(out, data_dir, '--max_iters=2', '--eval_interval=2').returncode == 0
    files = {f: os.path.getmtime(os.path.join(out, f)) for f in ('ckpt.pt', 'metrics.jsonl', 'series/ckpt_0000002.pt')}
    r = train(out, data_dir, '--max_iters=2', '--overwrite=True', '--topk=999')
    assert r.returncode == 2 and 'topk must be between 0 and' in r.stderr
    assert {f: os.path.getmtime(os.path.join(out, f)) for f in files} == files


def test_a_folder_with_only_metrics_holds_a_run(tmp_path, data_dir):
    (tmp_path / 'metrics.jsonl').write_text('{"iter": 0, "kind": "train", "loss": 5.0}\n')  # a run that died early
    r = train(str(tmp_path), data_dir, '--max_iters=1')
    assert r.returncode == 2 and 'already holds a run' in r.stderr


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    r = train(str(tmp_path), data_dir, '--max_iters=50', '--eval_interval=1000', '--learning_rate=1e12',
              '--grad_clip=0', '--warmup_iters=0', '--series=False')
    assert r.returncode == 1 and 'the loss became nan' in r.stderr and 'ckpt.pt holds iteration 0' in r.stderr
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 0 and all(torch.isfinite(v).all() for v in ckpt['model'].values())


def train_patched(tmp_path, data_dir, patch, *extra):
    """train.py as a user runs it, after `patch` (Python source) has replaced something it calls."""
    (tmp_path / 'patched.py').write_text(f"import runpy, sys, torch\nsys.path.insert(0, {ROOT!r})\n{patch}\n"
                                         f"runpy.run_path({os.path.join(ROOT, 'train.py')!r}, run_name='__main__')\n")
    return run(str(tmp_path / 'patched.py'), '--dataset=concepts', f'--data_dir={data_dir}',
               f'--out_dir={tmp_path / "out"}', *TINY, '--topk=8', '--n_nontopk=1', *extra)


def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path, data_dir):
    # the second torch.save writes a few bytes and fails (a full disk)
    r = train_patched(tmp_path, data_dir, """real, calls = torch.save, []
def save(obj, f, *args, **kwargs):
    calls.append(obj['iter_num'])
    if len(calls) == 2:
        f.write(b'torn')
        raise OSError(28, 'No space left on device')
    real(obj, f, *args, **kwargs)
torch.save = save""", '--max_iters=8', '--lr_decay_iters=8', '--eval_interval=4', '--series=False')
    assert r.returncode == 1 and 'No space left on device' in r.stderr
    assert torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)['iter_num'] == 0  # iteration 4's write failed


def test_a_step_that_leaves_a_nan_weight_is_never_snapshotted(tmp_path, data_dir):
    # the step of iteration 3 writes a NaN into one weight, as an infinite gradient times clipping's 0
    # would; its loss was finite and no loss is logged after it, so only the weights show it
    r = train_patched(tmp_path, data_dir, """real, calls = torch.optim.AdamW.step, []
def step(self, *args, **kwargs):
    out = real(self, *args, **kwargs)
    calls.append(1)
    if len(calls) == 4:
        self.param_groups[0]['params'][0].data[0, 0] = float('nan')
    return out
torch.optim.AdamW.step = step""", '--max_iters=8', '--lr_decay_iters=8', '--eval_interval=8', '--log_interval=100')
    assert r.returncode == 1 and 'a weight became nan at iteration 3' in r.stderr
    assert [i for i, _ in checkpoint_series(tmp_path / 'out')] == [0, 1, 2]  # not 4


def test_the_logged_train_loss_is_the_mean_over_micro_batches(tmp_path, data_dir):
    # two micro-batches of 4 windows draw the same windows as one batch of 8 from the same generator
    losses = []
    for i, (accum, batch) in enumerate([(2, 4), (1, 8)]):
        out = str(tmp_path / str(i))
        r = train(out, data_dir, '--max_iters=1', f'--gradient_accumulation_steps={accum}', f'--batch_size={batch}',
                  '--series=False')
        assert r.returncode == 0, r.stderr
        losses.append(rows(out, 'train')[0]['loss'])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_sample_prints_text_from_a_series_checkpoint_and_its_seed_repeats_it(full_run):
    def sample(*seed):
        r = run('sample.py', f'--out_dir={full_run}', '--ckpt=8', '--start=the farmer', '--num_samples=2',
                '--max_new_tokens=8', '--device=cpu', '--threads=1', *seed)
        assert r.returncode == 0, r.stderr
        return r.stdout
    out = sample()
    assert 'iteration 8' in out and out.count('the farmer') == 2
    assert sample() == out and sample('--seed=7') != out


@pytest.mark.parametrize('args,message', [
    (['--start=the zebra'], "not in this dataset's vocabulary: 'zebra'"),
    (['--ckpt=3'], 'no checkpoint for iteration 3'),
    (['--start=FILE:/no/such'], "prompt file '/no/such' not found"),
    (['--start=FILE:/tmp'], "prompt file '/tmp' is a folder: give --start=FILE:PATH of a text file"),
    (['--ckpt=/tmp'], 'checkpoint /tmp is a folder: give a checkpoint file, as /tmp/ckpt.pt'),
    (['--threads=-1'], "threads must be 0 (torch's default) or more"),
    (['--num_samples=0'], '--num_samples and --max_new_tokens must be 1 or more'),
    (['--out_dir=README.md'], "--out_dir=README.md is a file: give the run's folder, or the file as --ckpt=README.md"),
])
def test_sample_mistakes_exit_2_with_one_line(full_run, args, message):
    r = run('sample.py', f'--out_dir={full_run}', '--device=cpu', *args)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1


def test_a_prompt_file_that_is_not_utf8_exits_2_with_one_line(full_run, tmp_path):
    (tmp_path / 'p.txt').write_bytes('the caf\u00e9'.encode('latin-1'))
    r = run('sample.py', f'--out_dir={full_run}', '--device=cpu', f'--start=FILE:{tmp_path / "p.txt"}')
    assert r.returncode == 2 and 'is not UTF-8 text' in r.stderr and r.stderr.count('\n') == 1


def test_an_out_dir_that_is_a_file_exits_2_before_any_work(tmp_path, data_dir):
    (tmp_path / 'f').write_text('notes')
    for out, message in ((tmp_path / 'f', 'is a file: give a folder'), (tmp_path / 'f' / 'run', 'a file: give a folder')):
        r = train(str(out), data_dir)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1
    assert (tmp_path / 'f').read_text() == 'notes'


@pytest.mark.parametrize('dataset,message', [('concepts', 'run `python prepare.py concepts` first'),
                                             ('shakespeer', 'prepare one of shakespeare_char, shakespeare')])
def test_train_on_a_missing_dataset_says_to_prepare_it(tmp_path, dataset, message):
    r = run('train.py', f'--dataset={dataset}', f'--data_dir={tmp_path}', f'--out_dir={tmp_path}/out', '--device=cpu')
    assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1


def test_a_resume_takes_settings_given_again_and_survives_a_torn_metrics_line(tmp_path, data_dir):
    out = str(tmp_path)
    assert train(out, data_dir, '--max_iters=2', '--eval_interval=2').returncode == 0
    with open(os.path.join(out, 'metrics.jsonl'), 'a') as f:
        f.write('{"iter": 3, "ki')  # a crash in mid-write
    r = run('train.py', f'--out_dir={out}', '--init_from=resume', '--max_iters=3', '--weight_decay=0.5',
            '--beta2=0.5', '--device=cpu', '--threads=1')
    assert r.returncode == 0, r.stderr
    groups = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['optimizer']['param_groups']
    assert groups[0]['betas'] == (0.9, 0.5) and groups[0]['weight_decay'] == 0.5 and groups[1]['weight_decay'] == 0
    assert [x['iter'] for x in rows(out, 'train')] == [0, 1, 2]
    r = run('train.py', f'--out_dir={out}', '--init_from=resume', '--block_size=8', '--device=cpu')
    assert r.returncode == 2 and 'a resumed run keeps block_size 16' in r.stderr and r.stderr.count('\n') == 1
    r = run('train.py', f'--out_dir={out}', '--init_from=resume', '--max_iters=4', '--dtype=float16', '--device=cpu',
            '--threads=1')  # a float32 run saved a disabled loss scaler, with no state to load into float16's
    assert r.returncode == 0 and 'float16' in r.stdout, r.stderr


def test_a_resume_drops_series_checkpoints_from_the_stretch_it_redoes(tmp_path, data_dir):
    out = str(tmp_path)
    assert train(out, data_dir, '--max_iters=2', '--eval_interval=2').returncode == 0
    # a snapshot from after ckpt.pt, as a run killed between an eval and the next series point leaves
    series = os.path.join(out, 'series')
    os.link(os.path.join(series, 'ckpt_0000002.pt'), os.path.join(series, 'ckpt_0000003.pt'))
    with open(os.path.join(out, 'metrics.jsonl'), 'a') as f:  # and its rows, at and after ckpt.pt's iteration
        f.writelines(json.dumps(dict(kind='train', iter=i, loss=99.0)) + '\n' for i in (2, 3))
    r = run('train.py', f'--out_dir={out}', '--init_from=resume', '--max_iters=5', '--device=cpu', '--threads=1')
    assert r.returncode == 0, r.stderr
    assert 'removed 1 series checkpoint(s) from after iteration 2' in r.stdout
    assert [i for i, _ in checkpoint_series(out)] == [0, 1, 2, 4, 5]  # 3 is not of the series: gone, not redone
    trains = rows(out, 'train')
    assert [x['iter'] for x in trains] == [0, 1, 2, 3, 4] and 99.0 not in [x['loss'] for x in trains]


def test_eval_only_needs_a_checkpoint_and_never_deletes_the_run(tmp_path, data_dir):
    out = str(tmp_path)
    assert train(out, data_dir, '--max_iters=2', '--eval_interval=2').returncode == 0
    files = sorted(os.listdir(out))
    r = train(out, data_dir, '--eval_only=True')
    assert r.returncode == 2 and '--eval_only evaluates a checkpoint' in r.stderr and r.stderr.count('\n') == 1
    metrics = open(os.path.join(out, 'metrics.jsonl')).read()
    for r in (run('train.py', f'--out_dir={out}', '--init_from=resume', '--eval_only=True', '--overwrite=True',
                  '--device=cpu'),
              train(out, data_dir, f"--init_from={out}/ckpt.pt", '--eval_only=True', '--overwrite=True')):
        assert r.returncode == 0, r.stderr
        assert sorted(os.listdir(out)) == files and open(os.path.join(out, 'metrics.jsonl')).read() == metrics


def test_eval_only_of_any_checkpoint_takes_its_dataset_and_block_size(full_run, tmp_path):
    # no --dataset, --data_dir or --block_size: the defaults (shakespeare_char in ./data) would be wrong
    out = os.path.join(tmp_path, 'never-made')
    r = run('train.py', f'--out_dir={out}', f'--init_from={full_run}/series/ckpt_0000008.pt', '--eval_only=True',
            '--device=cpu', '--eval_iters=2')
    assert r.returncode == 0, r.stderr
    assert 'step 8: train loss' in r.stdout and not os.path.exists(out)  # its own iteration; nothing written


def test_a_new_run_from_a_checkpoint_trains_on_its_data_with_a_new_recipe(full_run, tmp_path):
    out = str(tmp_path / 'new')  # no --dataset or --data_dir: the defaults (shakespeare_char in ./data) would be wrong
    r = run('train.py', f'--out_dir={out}', f'--init_from={full_run}/series/ckpt_0000008.pt', '--max_iters=2',
            '--eval_iters=2', '--device=cpu', '--threads=1')
    assert r.returncode == 0, r.stderr
    config = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['config']
    old = torch.load(os.path.join(full_run, 'ckpt.pt'), weights_only=True)['config']
    assert all(config[k] == old[k] for k in ('dataset', 'data_dir', 'block_size'))  # its data and context
    assert config['batch_size'] == 64 != old['batch_size'] and config['max_iters'] == 2  # train.py's recipe


def test_a_checkpoint_is_never_read_or_trained_with_another_vocabulary(full_run, data_dir, tmp_path):
    # the same dataset with two words' ids swapped, as a dataset prepared again from other text would number them
    (tmp_path / 'concepts').mkdir()
    meta = json.loads(open(os.path.join(data_dir, 'concepts', 'meta.json')).read())
    meta['vocab'][:2] = meta['vocab'][1::-1]
    (tmp_path / 'concepts' / 'meta.json').write_text(json.dumps(meta))
    for split in ('train', 'val'):
        os.symlink(os.path.join(data_dir, 'concepts', f'{split}.bin'), tmp_path / 'concepts' / f'{split}.bin')
    r = run('sample.py', f'--out_dir={full_run}', f'--data_dir={tmp_path}', '--device=cpu')
    assert r.returncode == 2 and 'has another vocabulary than the one this run was trained on' in r.stderr
    r = run('train.py', f'--out_dir={tmp_path / "new"}', f'--init_from={full_run}/ckpt.pt', f'--data_dir={tmp_path}',
            '--device=cpu')
    assert r.returncode == 2 and 'was trained with another vocabulary than dataset concepts' in r.stderr
    assert r.stderr.count('\n') == 1


def test_a_checkpoint_without_a_fingerprint_is_not_read_with_a_vocabulary_of_another_size(full_run, tmp_path):
    # a nanoGPT shakespeare_char run (65 characters) read with this repository's shakespeare_char (84)
    ck = torch.load(os.path.join(full_run, 'ckpt.pt'), weights_only=True)
    del ck['tokenizer']
    ck['config'] = dict(ck['config'], dataset='tiny')
    torch.save(ck, tmp_path / 'ckpt.pt')
    r = run('prepare.py', f'--input={os.path.join(ROOT, "README.md")}', '--name=tiny', '--tokenizer=char',
            f'--data_dir={tmp_path / "data"}')
    assert r.returncode == 0, r.stderr
    r = run('sample.py', f'--out_dir={tmp_path}', f'--data_dir={tmp_path / "data"}', '--device=cpu')
    assert r.returncode == 2 and 'has another vocabulary than the one' in r.stderr and r.stderr.count('\n') == 1, r.stderr


def test_an_interval_of_zero_exits_2_with_one_line(tmp_path, data_dir):
    r = train(str(tmp_path), data_dir, '--eval_interval=0')
    assert r.returncode == 2 and '--eval_interval must be 1 or more, not 0' in r.stderr and r.stderr.count('\n') == 1


@pytest.mark.parametrize('arg,message', [
    ('--n_head=0', 'must each be 1 or more'),
    ('--threads=-1', 'threads must be 0'),
    ('--grad_clip=-1', '--grad_clip must be a finite number, 0 or more'),  # would flip the gradients
    ('--learning_rate=1e999', '--learning_rate must be a finite number, 0 or more, not inf'),
    ('--warmup_iters=-5', '--warmup_iters must be a finite number, 0 or more'),
    ('--n_layer=-1', 'n_layer, n_head, n_embd, block_size and vocab_size must each be 1 or more'),  # not n_nontopk
    ('--n_layer=1', 'topk=8 with n_nontopk=1 of n_layer=1 leaves no TopK layer'),  # not a dense model saved as TopK
    ('--init_from=resume', 'no checkpoint at'),
    ('--init_from=resume --overwrite=True', '--init_from=resume continues the run in --out_dir and --overwrite=True'),
    ('--beta2=1.5', '--beta1 and --beta2 must be in [0, 1)'),
    pytest.param('--device=mps', 'no usable MPS backend',
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason='this machine has MPS')),
])
def test_a_bad_model_or_machine_setting_exits_2_with_one_line(tmp_path, data_dir, arg, message):
    r = train(str(tmp_path / 'out'), data_dir, *arg.split())
    assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1
    assert not os.path.exists(tmp_path / 'out')


def test_lr_warmup_may_end_where_the_decay_ends(tmp_path, data_dir):
    r = train(str(tmp_path), data_dir, '--max_iters=3', '--warmup_iters=3', '--lr_decay_iters=3', '--series=False')
    assert r.returncode == 0, r.stderr  # get_lr divided by zero at iteration 3


def test_bfloat16_on_cpu_runs_in_bfloat16(tmp_path, data_dir):
    losses = {}
    for dtype in ('float32', 'bfloat16'):
        out = str(tmp_path / dtype)
        assert train(out, data_dir, '--max_iters=3', f'--dtype={dtype}', '--series=False').returncode == 0
        losses[dtype] = [x['loss'] for x in rows(out, 'train')]
    assert losses['float32'][0] != losses['bfloat16'][0]  # autocast ran


def test_a_run_does_not_resume_on_a_dataset_prepared_again_with_other_settings(tmp_path):
    data, out = str(tmp_path / 'data'), str(tmp_path / 'out')
    assert run('prepare.py', 'concepts', '--concept_sentences=300', f'--data_dir={data}').returncode == 0
    assert train(out, data, '--max_iters=2', '--eval_interval=2').returncode == 0
    assert run('prepare.py', 'concepts', '--concept_sentences=400', f'--data_dir={data}',
               '--force=True').returncode == 0  # the same 168-word vocabulary, other data
    r = run('train.py', f'--out_dir={out}', f'--data_dir={data}', '--init_from=resume', '--max_iters=4', '--device=cpu')
    assert r.returncode == 2 and 'was prepared again since' in r.stderr and r.stderr.count('\n') == 1


def test_a_bfloat16_run_resumes_in_bfloat16(tmp_path, data_dir):
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')  # on CPU, 'auto' would mean float32
    for out, iters in ((full, 4), (part, 2)):
        assert train(out, data_dir, f'--max_iters={iters}', '--lr_decay_iters=4', '--eval_interval=2',
                     '--dtype=bfloat16', '--series=False').returncode == 0
    r = run('train.py', f'--out_dir={part}', '--init_from=resume', '--max_iters=4', '--device=cpu', '--threads=1')
    assert r.returncode == 0 and 'bfloat16' in r.stdout, r.stderr
    assert [x['loss'] for x in rows(full, 'train')] == [x['loss'] for x in rows(part, 'train')]
    a, b = (torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['model'] for out in (full, part))
    assert all(torch.equal(a[k], b[k]) for k in a)
