"""Run one of the project's scripts as `python script.py args` would, in a process forked from a server
that has imported torch, numpy, tiktoken and matplotlib once. A fresh interpreter spends 2-3 s on those
imports, most of what a run that stops at a user mistake costs; a fork spends well under 0.1 s. The
server never imports the project's own modules, so each run imports them afresh, as a user's would.

What a fork does not give afresh: the str hash seed, the environment read at import (OMP_NUM_THREADS and
the like; the rest of os.environ is the caller's), and interpreter shutdown (atexit handlers, waiting
for threads): the scripts use none of these, and write their files inside `with` blocks."""
import os
import runpy
import sys
import traceback

PRELOAD = ['torch', 'numpy', 'tiktoken', 'matplotlib']
HERE = os.path.dirname(os.path.abspath(__file__))


def main(script, argv, cwd, env, out_path, err_path):
    """The forked process: point file descriptors 1 and 2 at the given files, run the script as
    __main__, and exit with the code the interpreter would give."""
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY)
        os.dup2(f, fd)
        os.close(f)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [script, *argv]
    # as `python script.py` puts the script's folder first; the tests' folder is not the script's path
    sys.path[:] = [os.path.dirname(script)] + [p for p in sys.path if os.path.abspath(p or '.') != HERE]
    try:
        runpy.run_path(script, run_name='__main__')
        code = 0
    except SystemExit as e:  # as the interpreter reads sys.exit's argument: a number, None, or a message
        code = e.code or 0
        if not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
