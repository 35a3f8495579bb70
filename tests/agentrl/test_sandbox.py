"""The sandbox stops what model-written code must not do, quickly, and says why."""

import os
from pathlib import Path

import pytest

from tandem.agentrl.sandbox import SandboxLimits, isolation, run_python

LIMITS = SandboxLimits(seconds=2, memory_mb=256)


def run(code: str, **overrides):
    return run_python(code, SandboxLimits(**{**LIMITS.__dict__, **overrides}))


def test_normal_code_returns_its_output_and_may_use_the_stdlib():
    result = run("import math, json, fractions\nprint(math.factorial(10), json.dumps({'a': 1}), fractions.Fraction(1, 3))")
    assert (result.status, result.stdout, result.stderr) == ("ok", '3628800 {"a": 1} 1/3\n', "")
    assert result.seconds < 2


def test_an_exception_is_an_error_with_the_traceback_of_the_code_only():
    result = run("x = 1\n1 / 0")
    assert result.status == "error"
    assert "ZeroDivisionError" in result.stderr and 'File "<python>", line 2' in result.stderr
    assert "_BOOTSTRAP" not in result.stderr and "exec(" not in result.stderr


@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(60)"])
def test_a_loop_or_a_hang_is_stopped_at_the_wall_time(code):
    result = run(code, seconds=1)
    assert result.status == "timeout" and result.seconds < 3


@pytest.mark.parametrize("code", ["x = bytearray(2 * 1024**3)", "x = [0] * 10**9", "s = 'a' * 2**31"])
def test_allocating_too_much_is_a_memory_error(code):
    result = run(code)
    assert result.status == "memory" and result.seconds < 2


@pytest.mark.parametrize("code", [
    "import socket\nsocket.socket().connect(('127.0.0.1', 9))",
    "import socket\ntry:\n    socket.create_connection(('example.com', 80))\nexcept Exception as e:\n    print('caught', e)",
    "import urllib.request\nurllib.request.urlopen('http://example.com')",
])
def test_the_network_is_closed_even_to_code_that_catches_errors(code):
    result = run(code)
    assert result.status == "network" and "caught" not in result.stdout


def test_the_network_namespace_has_only_loopback_where_available():
    if isolation() == "none":
        pytest.skip("user namespaces are not available here")
    result = run("print(open('/proc/net/dev').read())")
    interfaces = [line.split(":")[0].strip() for line in result.stdout.splitlines() if ":" in line]
    assert result.status == "ok" and interfaces == ["lo"]


@pytest.mark.parametrize("code", [
    "open('{target}', 'w').write('x')",
    "open('../../{name}', 'a').write('x')",
    "import os\nos.close(os.open('{target}', os.O_WRONLY | os.O_CREAT))",
    "import os\nos.remove('{target}')",
    "import os\nos.symlink('/etc/passwd', 'link')\nopen('link', 'w')",
    "import shutil\nshutil.rmtree('{parent}')",
])
def test_writing_outside_the_directory_is_stopped(tmp_path, code):
    target = tmp_path / "outside.txt"
    if "remove" in code:
        target.write_text("keep me")
    result = run(code.format(target=target, name=target.name, parent=tmp_path), seconds=10)  # a busy machine is slow
    assert result.status == "write", result
    assert (target.read_text() == "keep me") if "remove" in code else not target.exists()
    assert tmp_path.is_dir()


def test_writing_inside_its_directory_is_allowed_and_it_starts_empty():
    result = run("import os\nprint(sorted(os.listdir('.')))\nopen('notes.txt', 'w').write('hi')\nprint(open('notes.txt').read())")
    assert result.status == "ok" and result.stdout == "['main.py']\nhi\n"


@pytest.mark.parametrize("code", [
    "import subprocess\nsubprocess.run(['echo', 'hi'])",
    "import os\nos.system('echo hi')",
    "import os\nos.fork()",
    "import os\nos.execv('/bin/echo', ['echo'])",
    "import ctypes\nctypes.CDLL(None).system(b'echo hi')",
    "import ctypes\nctypes.CDLL('libc.so.6')",
    "import os, signal\nos.kill(1, signal.SIGTERM)",
])
def test_starting_processes_and_native_code_are_stopped(code):
    result = run(code)
    assert result.status == "killed" and "not allowed" in result.stderr and "hi" not in result.stdout


def test_output_is_cut_to_the_limit_and_the_environment_is_empty():
    result = run("import os\nprint(sorted(os.environ))\nprint('x' * 100000)", output_chars=500)
    assert result.status == "ok"
    assert result.stdout.splitlines()[0] in ("[]", "['LC_CTYPE']")  # Python's own C-locale coercion only
    assert len(result.stdout) < 600 and "output cut at 500 characters; 100" in result.stdout


def test_site_packages_are_hidden_unless_asked_for():
    assert run("import numpy").status == "error"
    assert run("import numpy; print(numpy.add(2, 3))", site_packages=True).stdout == "5\n"


def test_no_temporary_directory_is_left_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    run("open('a', 'w').write('x')")
    run("while True: pass", seconds=1)
    assert os.listdir(tmp_path) == []
    assert not Path(tmp_path, "a").exists()


def test_the_file_system_is_read_only_even_past_the_guard_where_available(tmp_path):
    """`os.open` relative to a directory descriptor is invisible to the audit hook; the mounts stop it."""
    if isolation() != "filesystem+network":
        pytest.skip("mount namespaces are not available here")
    code = (f"import os\nfolder = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
            "os.close(os.open('escaped.txt', os.O_WRONLY | os.O_CREAT, dir_fd=folder))")
    result = run(code)
    assert result.status == "error" and "Read-only file system" in result.stderr
    assert not (tmp_path / "escaped.txt").exists()
    assert run("open('inside.txt', 'w').write('x'); print(open('inside.txt').read())").stdout == "x\n"
