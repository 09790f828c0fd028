"""
nanoGPT's way of configuring a script, without its faults. A script defines its settings as plain
globals with a comment each, then calls

    config = configure(globals())

which applies, in order, any Python config files named on the command line (`config/train_x.py`)
and any `--key=value` overrides, checks every key and type, and returns the final settings as a
dict (train.py records it in each checkpoint). `--help` lists every key with its default and
comment. A list default makes a key repeatable: `--neuron=1:5 --neuron=2:7` or `--neuron=1:5,2:7`. With positional=True,
words that are not config files (`prepare.py shakespeare_char`) come back as a second value.
"""

import ast
import difflib
import json
import math
import os
import re
import sys
import types


def die(msg):
    """A user mistake: one line that says what to do, exit code 2, no traceback."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def output_file(path, key='json'):
    """Check an output file's path ('' = none), and make its folder, before the work: a bad --json found
    after a long run would lose the run's results."""
    if not path:
        return
    if os.path.isdir(path):
        die(f"--{key}={path} is a folder: give a file path, as --{key}={os.path.join(path, 'results.json')}")
    try:
        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    except OSError as e:
        die(f"--{key}={path}: cannot make its folder ({e.strerror})")


def write_json(path, obj):
    """Write obj to the JSON file path ('' = none; output_file checked it before the work). NaN (a dead
    neuron's entropy, say) and infinities are not JSON: they become null; tensors and arrays become lists."""
    if not path:
        return
    text = json.dumps(_plain(obj), indent=1, allow_nan=False, default=str)  # a failure here leaves no torn file
    with open(path, 'w') as f:
        f.write(text)
    print(f"wrote {path}")


def _plain(obj):
    if hasattr(obj, 'tolist'):  # a tensor or an array
        obj = obj.tolist()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def check_folder(path, key):
    """One line and exit when path cannot be a folder: it, or a folder above it, is a file. Makes nothing."""
    found = os.path.abspath(path)
    while not os.path.exists(found):
        found = os.path.dirname(found)
    if not os.path.isdir(found):
        where = 'is a file' if found == os.path.abspath(path) else f'is inside {found}, a file'
        die(f"--{key}={path} {where}: give a folder")


def output_dir(path, key='report_dir'):
    """The same for an output folder: made before the work, or one line saying why it cannot be."""
    check_folder(path, key)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        die(f"--{key}={path}: cannot make it ({e.strerror})")


def _comments(script):
    """{key: comment} from lines like `key = value  # comment` at the top level of the script."""
    try:
        with open(script) as f:
            return {m.group(1): m.group(2).strip() for m in re.finditer(r'^(\w+) = .*?#\s*(.*)$', f.read(), re.M)}
    except OSError:
        return {}


KINDS = {int: 'an integer', float: 'a number', str: 'a string', list: 'a list'}


def _coerce(key, value, default, where):
    """value (a string from the command line, or a Python value from a config file) as the type of
    default. `where` prefixes the key in messages: '--' or 'config/x.py: '."""
    want = type(default)
    if isinstance(value, str) and want is not str:
        if want is bool:
            low = value.lower()
            if low not in ('true', 'false', '1', '0', 'yes', 'no'):
                die(f"{where}{key} takes True or False, not {value!r}")
            return low in ('true', '1', 'yes')
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if default is not None:
                die(f"{where}{key} takes {KINDS.get(want, want.__name__)}, not {value!r}")
    if want is list and isinstance(value, list) and default:  # a list's items as the default's items
        return [_coerce(key, v, default[0], where) for v in value]
    if default is None or isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # --learning_rate=1 means 1.0 (nanoGPT's configurator refuses it)
    if want is str and value is not None:  # None would become the folder name 'None'
        return str(value)
    die(f"{where}{key} takes {KINDS.get(want, want.__name__)}, not {value!r}")


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def configure(scope, argv=None, positional=False, given=None, file_keys_strict=True):
    """Override the settings in `scope` (a script's globals()) in place; return them as a dict.
    The keys that a config file or the command line set are added to the set `given`, if one is passed.
    file_keys_strict=False skips config-file keys the script does not have (bench.py reads train configs)."""
    given = set() if given is None else given
    argv = sys.argv[1:] if argv is None else argv
    # settings are the script's lower-case globals of plain types; UPPER_CASE ones are constants
    keys = [k for k, v in scope.items() if not k.startswith('_') and not k.isupper()
            and isinstance(v, (int, float, bool, str, list, type(None)))]
    script = scope.get('__file__', sys.argv[0])
    if '--help' in argv or '-h' in argv:
        doc, notes = (scope.get('__doc__') or '').strip(), _comments(script)
        print(doc + '\n\nsettings (config files first, then --key=value overrides):')
        for k in keys:
            print(f"  {f'--{k}={scope[k]!r}':<36} {notes.get(k, '')}")
        sys.exit(0)
    for arg in [a for a in argv if a.startswith('--')]:  # before any config file runs: `--out_dir x.py` must not run x.py
        key, eq, _ = arg[2:].partition('=')
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            die(f"unknown setting --{key}" + (f"; did you mean --{close[0]}?" if close else "") + " (see --help)")
        if not eq and not isinstance(scope[key], bool):
            die(f"--{key} needs a value: --{key}=VALUE")
    repeated = set()
    args = []
    # config files first, then overrides, wherever they stand on the line: `--topk=0 config/x.py` must not
    # let the file undo the flag (nanoGPT applies them left to right)
    for arg in sorted(argv, key=lambda a: a.startswith('--') or not a.endswith('.py')):
        if arg.startswith('--'):
            key, eq, value = arg[2:].partition('=')
            value = value if eq else 'True'  # a bare --flag (only bools get here)
            given.add(key)
            if isinstance(scope[key], list):  # repeatable: the first use replaces the default list
                # --x=1,2 is --x=1 --x=2; --x= empties; the items take the type of the default's
                items = _coerce(key, [_literal(v) for v in value.split(',') if v], scope[key], '--')
                scope[key] = (scope[key] if key in repeated else []) + items
                repeated.add(key)
            else:
                scope[key] = _coerce(key, value, scope[key], '--')
        elif arg.endswith('.py'):
            if not os.path.isfile(arg):
                die(f"config file {arg} not found")
            settings = {}
            try:
                with open(arg) as f:
                    exec(compile(f.read(), arg, 'exec'), settings)  # one namespace: a comprehension sees the keys above it
            except Exception as e:  # a typo in the file: its line, not a traceback
                die(f"config file {arg}: {type(e).__name__}: {e}")
            for key, value in settings.items():
                if key.startswith('_') or callable(value) or isinstance(value, types.ModuleType):  # imports, helpers
                    continue
                if key not in keys:
                    if not file_keys_strict:
                        continue
                    die(f"{arg}: unknown setting {key} (see --help)")
                scope[key] = _coerce(key, value, scope[key], f'{arg}: ')
                given.add(key)
        elif positional:
            args.append(arg)
        else:
            die(f"unexpected argument {arg!r}: settings are --key=value, config files end in .py")
    config = {k: scope[k] for k in keys}
    if isinstance(config.get('seed'), int) and not 0 <= config['seed'] < 2**63:  # torch's generators take 64 bits
        die(f"seed takes an integer from 0 to 2**63 - 1, not {config['seed']}")
    return (config, args) if positional else config
