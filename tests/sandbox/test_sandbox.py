"""The sandbox stops what model-written code must not do, quickly, and says why; it refuses to run unisolated."""

import os
import tempfile
from pathlib import Path

import pytest

import tandem.sandbox.namespaces as namespaces
from tandem.lm_as_agent.tools import python_tool
from tandem.sandbox import SandboxLimits, SandboxUnavailable, choose_isolation, run_python, run_tests

LIMITS = SandboxLimits(seconds=2, memory_mb=256)


def run(code: str, **overrides):
    return run_python(code, SandboxLimits(**{**LIMITS.__dict__, **overrides}))


def test_normal_code_returns_its_output_and_may_use_the_stdlib():
    result = run("import math, json, fractions\nprint(math.factorial(10), json.dumps({'a': 1}), fractions.Fraction(1, 3))")
    assert (result.status, result.stdout, result.stderr) == ("ok", '3628800 {"a": 1} 1/3\n', "")
    assert result.seconds < 2


@pytest.mark.parametrize("level", ["strict", "fallback", "off"])
def test_every_level_runs_code_and_says_what_it_printed(strict, level):
    result = run("import decimal, hashlib\nprint(decimal.Decimal(1) / 8, hashlib.sha256(b'').hexdigest()[:8])",
                 isolation=level)
    assert (result.status, result.stdout) == ("ok", "0.125 e3b0c442\n")


def test_an_exception_is_an_error_with_the_traceback_of_the_code_only():
    result = run("x = 1\n1 / 0")
    assert result.status == "error"
    assert "ZeroDivisionError" in result.stderr and 'File "<python>", line 2' in result.stderr
    assert "_BOOTSTRAP" not in result.stderr and "exec(" not in result.stderr


@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(60)"])
def test_a_loop_or_a_hang_is_stopped_at_the_wall_time(code):
    result = run(code, seconds=1)
    assert result.status == "timeout" and result.seconds < 3


def test_the_cpu_limit_is_a_timeout_even_for_the_first_process_of_a_pid_namespace(strict):
    """PID 1 of a namespace ignores SIGXCPU unless it has a handler; the guard's handler makes it a timeout.
    (One Python thread spends CPU no faster than wall time, so the signal is raised here rather than earned.)"""
    result = run("import signal\nsignal.raise_signal(signal.SIGXCPU)\nprint('went on')")
    assert result.status == "timeout" and "CPU time" in result.stderr and result.stdout == ""


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


@pytest.mark.parametrize("level", ["strict", "fallback"])
def test_the_network_namespace_has_only_loopback(strict, level):
    result = run("print(open('/proc/net/dev').read())", isolation=level)
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
@pytest.mark.parametrize("level", ["strict", "fallback"])
def test_writing_outside_the_directory_is_stopped(strict, tmp_path, code, level):
    target = tmp_path / "outside.txt"
    if "remove" in code:
        target.write_text("keep me")
    result = run(code.format(target=target, name=target.name, parent=tmp_path), seconds=10, isolation=level)
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
    assert result.stdout.splitlines()[0] == "[]"
    assert len(result.stdout) < 600 and "output cut at 500 characters; 100" in result.stdout


@pytest.mark.parametrize("level", ["strict", "fallback"])
def test_site_packages_are_hidden_unless_asked_for(strict, level):
    assert run("import numpy", isolation=level).status == "error"
    assert run("import numpy; print(numpy.add(2, 3))", site_packages=True, isolation=level).stdout == "5\n"


def test_a_library_that_tries_ctypes_gets_an_import_error_and_goes_on():
    """numpy imports ctypes if it can: a library's import fails quietly, only the code's own import stops the run."""
    result = run("import numpy, sys\nprint(numpy.ones(3).sum(), 'ctypes' in sys.modules)", site_packages=True)
    assert (result.status, result.stdout) == ("ok", "3.0 False\n")


def test_no_temporary_directory_is_left_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    run("open('a', 'w').write('x')")
    run("while True: pass", seconds=1)
    assert os.listdir(tmp_path) == []
    assert not Path(tmp_path, "a").exists()


def test_the_file_system_is_read_only_even_past_the_guard_in_the_fallback(strict, tmp_path):
    """`os.open` relative to a directory descriptor is invisible to the audit hook; the mounts stop it."""
    code = (f"import os\nfolder = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
            "os.close(os.open('escaped.txt', os.O_WRONLY | os.O_CREAT, dir_fd=folder))")
    result = run(code, isolation="fallback")
    assert result.status == "error" and "Read-only file system" in result.stderr
    assert not (tmp_path / "escaped.txt").exists()
    assert run("open('inside.txt', 'w').write('x'); print(open('inside.txt').read())").stdout == "x\n"


# ---- refusing to run unisolated ----------------------------------------------------------------------------


@pytest.fixture
def no_namespaces(monkeypatch):
    """A machine where neither strict nor fallback isolation works."""
    monkeypatch.setattr(namespaces, "_works", lambda level: level == "off")
    monkeypatch.delenv(namespaces.ENVIRONMENT_VARIABLE, raising=False)


def test_without_isolation_the_sandbox_refuses_and_names_the_option(no_namespaces):
    with pytest.raises(SandboxUnavailable, match="TANDEM_SANDBOX_ISOLATION=off"):
        run_python("print(1)")
    with pytest.raises(SandboxUnavailable, match="isolation='off'"):
        python_tool()  # refused when the tool is made, not told to the model as a tool error
    assert run("print(1)", isolation="off").stdout == "1\n"


def test_the_environment_variable_allows_running_unisolated(no_namespaces, monkeypatch):
    monkeypatch.setenv(namespaces.ENVIRONMENT_VARIABLE, "off")
    assert choose_isolation() == "off" and run_python("print(2)").stdout == "2\n"
    assert python_tool()(code="print(3)") == "3"


def test_asking_for_strict_where_only_the_fallback_works_is_refused(monkeypatch):
    monkeypatch.setattr(namespaces, "_works", lambda level: level != "strict")
    assert choose_isolation("auto") == "fallback"
    with pytest.raises(SandboxUnavailable, match="strict"):
        choose_isolation("strict")
    with pytest.raises(ValueError, match="one of auto, strict, fallback, off"):
        choose_isolation("bwrap")


# ---- a solution against its tests --------------------------------------------------------------------------


@pytest.mark.parametrize("solution, status", [
    ("def double(x):\n    return 2 * x", "ok"),
    ("def double(x):\n    return x + 2", "error"),  # right at 2 only
    ("def double(x):\n    raise ValueError('no')", "error"),
    ("def double(x):\n    while True: pass", "timeout"),
    ("import sys\nsys.exit(0)", "error"),  # ends before the tests: not a pass
    ("import os\nos._exit(0)", "error"),
    ("def double(x):\n    __import__('os')._exit(0)", "error"),
    ("print('lots of output ' * 1000)\ndef double(x):\n    return 2 * x", "ok"),
])
def test_a_solution_passes_only_when_every_test_runs_and_passes(solution, status):
    result = run_tests(solution, "assert double(2) == 4\nassert double(5) == 10", SandboxLimits(seconds=1))
    assert result.status == status, result
    assert result.stdout == ""  # the verdict's marker is never handed back
