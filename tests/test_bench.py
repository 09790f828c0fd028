"""bench.py runs on a tiny CPU config and writes its numbers; it asserts no speed."""
from conftest import run, strict_json


def test_bench_runs_on_cpu_and_writes_json(tmp_path):
    out = tmp_path / 'new' / 'bench.json'  # its folder is made
    r = run('bench.py', '--device=cpu', '--n_layer=2', '--n_embd=32', '--n_head=2', '--block_size=16', '--topk=8',
            '--steps=2', '--repeats=2', '--sample_tokens=8,20', '--sample_repeats=1', '--analysis_tokens=2048',
            f'--json={out}')
    assert r.returncode == 0, r.stderr
    assert 'TopK / dense step time' in r.stdout
    numbers = strict_json(out)
    assert numbers['train']['dense_ms'] > 0 and numbers['train']['ratio'] > 0
    assert numbers['topk_layer']['ours_us'] > 0 and numbers['topk_layer']['speedup'] > 0
    assert set(numbers['sample']) == {'8', '20'} and numbers['analysis_tok_s'] > 0


def test_bench_reads_a_train_config(tmp_path):
    cfg = tmp_path / 'c.py'
    cfg.write_text("out_dir = 'x'\nn_layer = 2\nn_embd = 32\nn_head = 2\nblock_size = 16\ntopk = 8\nlearning_rate = 1.0\n")
    r = run('bench.py', str(cfg), '--device=cpu', '--steps=1', '--repeats=1', '--sample_tokens=',
            '--analysis_tokens=1024', '--profile=200')  # all the ops: on a busy machine the order of small ones varies
    assert r.returncode == 0, r.stderr
    assert '2x32' in r.stdout
    assert '# profile, TopK model' in r.stdout and '_TopKFunction' in r.stdout  # the TopK op was recorded


def test_bench_mistakes_exit_2_with_one_line():
    every = '--batch_size, --analysis_tokens and --sample_tokens must each be 1'
    for args, message in ((['--repeats=0'], every), (['--batch_size=0'], every), (['--sample_tokens=128,0'], every),
                          (['--analysis_tokens=0'], every),
                          (['--profile=-1'], '--profile is how many ops to print'),
                          (['--n_nontopk=4'], '--n_nontopk must be 0 to n_layer - 1 (3)'),
                          (['--topk=999'], 'topk must be between 0 and the TopK width 128'),
                          (['--topk=0'], '--topk must be 1 or more'),
                          (['--json=.'], '--json=. is a folder')):
        r = run('bench.py', '--device=cpu', *args)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count('\n') == 1, r.stderr


def test_rounds_alternate_which_function_runs_first():
    import bench
    calls = []
    times = bench.alternate([lambda: calls.append('a') or 1.0, lambda: calls.append('b') or 2.0], 4)
    assert calls == ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a'] and times == [[1.0] * 4, [2.0] * 4]


def test_a_ratio_is_the_median_of_the_ratios_within_rounds():
    import bench
    dense, topk = [1.0, 2.0, 4.0], [1.5, 2.2, 8.0]  # a slow round (the third) moves both
    assert bench.round_ratio(dense, topk) == 1.5  # of 1.5, 1.1 and 2.0; the ratio of medians would be 1.1
