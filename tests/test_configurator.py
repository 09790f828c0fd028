"""Claims of configurator.py: config files, typed --key=value overrides, one-line errors, --help."""
import math

import numpy as np
import pytest
import torch

from configurator import configure, write_json
from conftest import strict_json


def defaults():
    return {'__file__': 'x.py', '__doc__': 'A script.', 'lr': 1e-3, 'iters': 100, 'name': 'out',
            'flag': False, 'maybe': None, 'neuron': [], 'scales': [0.5, 1.0], 'PINNED_HASH': 'abc'}


def test_overrides_take_the_type_of_the_default():
    scope = defaults()
    cfg = configure(scope, ['--lr=1', '--iters=20', '--name=123', '--flag', '--maybe=(1, 2)'])
    assert cfg == {'lr': 1.0, 'iters': 20, 'name': '123', 'flag': True, 'maybe': (1, 2), 'neuron': [], 'scales': [0.5, 1.0]}
    assert scope['lr'] == 1.0 and isinstance(scope['lr'], float)  # --lr=1 is fine, unlike nanoGPT


def test_a_list_setting_is_repeatable():
    cfg = configure(defaults(), ['--neuron=1:5', '--neuron=2:7,3:1'])
    assert cfg['neuron'] == ['1:5', '2:7', '3:1']
    assert configure(defaults(), ['--neuron=128,512'])['neuron'] == [128, 512]
    assert configure(defaults(), ['--neuron='])['neuron'] == []
    assert configure(defaults(), ['--scales=2,4'])['scales'] == [2.0, 4.0]  # items take the defaults' type


def test_a_config_file_is_python_that_may_import_and_reuse_its_keys(tmp_path):
    f = tmp_path / 'c.py'
    f.write_text("import math\nfrom math import sqrt\n\n\ndef half(x):\n    return x / 2\n\n\n"
                 "iters = 7\nscales = [i / iters for i in range(2)]\nlr = math.sqrt(4) + half(sqrt(4))\n")
    cfg = configure(defaults(), [str(f)])
    assert cfg['iters'] == 7 and cfg['scales'] == [0.0, 1 / 7] and cfg['lr'] == 3.0


def test_config_file_then_command_line(tmp_path):
    f = tmp_path / 'c.py'
    f.write_text("iters = 7\nname = 'from-file'\n_private = 3\n")
    given = set()
    cfg = configure(defaults(), [str(f), '--name=cli'], given=given)
    assert cfg['iters'] == 7 and cfg['name'] == 'cli' and given == {'iters', 'name'}
    assert configure(defaults(), ['--name=cli', str(f)])['name'] == 'cli'  # an override wins wherever it stands


def test_a_value_given_after_a_space_is_refused_before_a_file_named_so_runs(tmp_path, capsys):
    f = tmp_path / 'out.py'
    f.write_text("raise SystemExit(7)\n")  # run as a config file, it would exit 7
    with pytest.raises(SystemExit) as e:
        configure(defaults(), ['--name', str(f)])
    assert e.value.code == 2 and '--name needs a value: --name=VALUE' in capsys.readouterr().err


@pytest.mark.parametrize('argv,message', [
    (['--itres=3'], 'unknown setting --itres; did you mean --iters?'),
    (['--iters=2.5'], 'iters takes an integer'),
    (['--iters=abc'], 'iters takes an integer'),
    (['--flag=maybe'], 'flag takes True or False'),
    (['--lr'], '--lr needs a value'),
    (['nope.py'], 'config file nope.py not found'),
    (['stray'], "unexpected argument 'stray'"),
    (['--scales=1,x'], "scales takes a number, not 'x'"),
    (['--PINNED_HASH=0'], 'unknown setting --PINNED_HASH'),  # UPPER_CASE globals are constants
])
def test_user_mistakes_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        configure(defaults(), argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1


@pytest.mark.parametrize('value', ['-1', str(2**64)])
def test_a_seed_torch_cannot_take_exits_2(value, capsys):
    with pytest.raises(SystemExit) as e:
        configure({**defaults(), 'seed': 1337}, [f'--seed={value}'])
    assert e.value.code == 2 and 'seed takes an integer from 0 to 2**63 - 1' in capsys.readouterr().err


@pytest.mark.parametrize('text,message', [('iters = 10 +\n', 'config file {f}: SyntaxError: invalid syntax (c.py, line 1)'),
                                          ('iters = nope\n', "config file {f}: NameError: name 'nope' is not defined"),
                                          ("scales = [1, 'a']\n", "{f}: scales takes a number, not 'a'"),
                                          ('name = None\n', '{f}: name takes a string, not None')])
def test_a_mistake_in_a_config_file_exits_2_with_one_line(tmp_path, capsys, text, message):
    f = tmp_path / 'c.py'
    f.write_text(text)
    with pytest.raises(SystemExit) as e:
        configure(defaults(), [str(f)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message.format(f=f) in err and err.count('\n') == 1


def test_unknown_key_in_a_config_file_is_refused(tmp_path, capsys):
    f = tmp_path / 'c.py'
    f.write_text("learning_rate = 1\n")
    with pytest.raises(SystemExit) as e:
        configure(defaults(), [str(f)])
    assert e.value.code == 2 and 'unknown setting learning_rate' in capsys.readouterr().err


def test_help_lists_every_setting_with_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        configure(defaults(), ['--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for k in ('--lr=0.001', '--iters=100', "--name='out'", '--flag=False', '--maybe=None', '--neuron=[]'):
        assert k in out


def test_positional_words_come_back_when_allowed():
    cfg, args = configure(defaults(), ['concepts', '--iters=3'], positional=True)
    assert args == ['concepts'] and cfg['iters'] == 3


def test_json_reports_are_strict_json(tmp_path, capsys):
    """NaN (a dead neuron's entropy, steer's other tokens' -log p when every token is a concept word) is
    not JSON: every script's --json writes it as null, and tensors as lists."""
    path = tmp_path / 'r.json'
    write_json(str(path), {'h': math.nan, 'rows': [{'x': torch.tensor([1.5, math.nan])}], 'pair': (1, 'a'),
                           'inf': -math.inf, 'np': [np.float32('nan'), np.int64(3)], 'zero_d': torch.tensor(2.5)})
    assert strict_json(path) == {
        'h': None, 'rows': [{'x': [1.5, None]}], 'pair': [1, 'a'], 'inf': None, 'np': [None, 3], 'zero_d': 2.5}
    assert capsys.readouterr().out == f"wrote {path}\n"
    write_json('', {'h': 1})  # no --json: nothing written, nothing said
    assert capsys.readouterr().out == ''
