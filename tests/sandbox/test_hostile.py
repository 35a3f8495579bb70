"""Hostile code under strict isolation: each attempt is refused or finds nothing of the host, and the caller goes on.

Every test asks for strict isolation explicitly: on a machine with unshare or bwrap a broken probe fails them
(see conftest.py) instead of letting them pass at a weaker level.
"""

import os
import subprocess
import sys
import time

import pytest
from checks import wait_for

from tandem.sandbox import SandboxLimits, run_python

LIMITS = SandboxLimits(seconds=5, memory_mb=256, isolation="strict")
# what the root holds: the interpreter and stdlib, their libraries, two devices, /proc and the work directory
ROOT = {"dev", "libs", "proc", "python", "work"}


def run(code: str, **overrides):
    return run_python(code, SandboxLimits(**{**LIMITS.__dict__, **overrides}))


def still_works():
    return run("print(6 * 7)").stdout == "42\n"


@pytest.fixture
def secret_home(tmp_path, monkeypatch):
    """A fake home with the files a user's credentials live in, pointed at by HOME."""
    secret = "tandem-secret-" + os.urandom(8).hex()
    home = tmp_path / "home"
    for name in (".netrc", ".cache/huggingface/token", ".ssh/id_ed25519", ".config/wandb/settings"):
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(secret)
    monkeypatch.setenv("HOME", str(home))
    return home, secret


def test_the_root_holds_only_what_python_needs(strict):
    result = run("import os\nprint(sorted(os.listdir('/')))\nprint(sorted(os.listdir('/dev')))")
    assert result.status == "ok"
    top, dev = result.stdout.splitlines()
    assert set(eval(top)) == ROOT and eval(dev) == ["null", "urandom"]


def test_installed_packages_are_hidden_unless_allowed(strict):
    """The interpreter's own site-packages sit inside its lib folder: an empty mount covers them."""
    code = "import os, sysconfig\npath = sysconfig.get_paths()['purelib']\nprint(os.listdir(path) if os.path.isdir(path) else [])"
    assert run(code).stdout == "[]\n"
    assert run("import numpy", site_packages=False).status == "error"


@pytest.mark.parametrize("code", [
    "print(open({path!r}).read())",
    "import os\nprint(os.listdir({folder!r}))",
    "import os\nprint(open(os.path.expanduser('~/.netrc')).read())",
    "import os\nos.symlink({path!r}, 'link')\nprint(open('link').read())",  # a link out of the work folder
    "import os\nos.symlink({folder!r}, 'up')\nprint(os.listdir('up'))",
    "import os\nprint(open('/proc/1/root' + {path!r}).read())",
    "import os\nprint(open('/proc/self/cwd/../' + {path!r}).read())",
])
def test_a_users_secret_files_are_not_there(strict, secret_home, code):
    home, secret = secret_home
    result = run(code.format(path=str(home / ".netrc"), folder=str(home)))
    assert result.status == "error" and "No such file or directory" in result.stderr, result
    assert secret not in result.stdout + result.stderr
    assert still_works()


@pytest.mark.parametrize("code", [
    "print(open('/etc/shadow').read())",
    "print(open('/etc/passwd').read())",
    "import os\nprint(os.listdir('/root'))",
    "import os\nprint(os.listdir('/home'))",
    "import os\nprint(os.listdir('/tmp'))",
])
def test_system_files_and_home_directories_are_not_there(strict, code):
    result = run(code)
    assert result.status == "error" and "No such file or directory" in result.stderr, result
    assert "root:" not in result.stdout


def test_the_environment_is_empty_and_nothing_of_the_parent_shows(strict, secret_home):
    home, secret = secret_home
    result = run("import os\nprint(dict(os.environ))\nprint(repr(open('/proc/self/environ').read()))")
    assert result.status == "ok" and result.stdout.splitlines()[0] == "{}"
    assert result.stdout.splitlines()[1] in ("''", repr("PWD=/work\0"))  # bwrap sets PWD, whatever it is told
    assert str(home) not in result.stdout


def test_other_processes_are_not_visible(strict):
    """A process of the host with a secret in its command line and environment: in the sandbox's own PID
    namespace /proc lists the sandbox alone, and no /proc entry shows the secret or pytest's command line."""
    secret = "tandem-secret-" + os.urandom(8).hex()
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", secret],
                              stdin=subprocess.PIPE, env={"SECRET": secret})
    try:
        # the host can see it (once the holder has started): the test could fail
        assert wait_for(lambda: secret in open(f"/proc/{holder.pid}/cmdline").read())
        code = ("import os\nfor pid in sorted(p for p in os.listdir('/proc') if p.isdigit()):\n"
                "    for name in ('cmdline', 'environ', 'comm'):\n"
                "        try:\n            print(pid, name, open(f'/proc/{pid}/{name}', 'rb').read())\n"
                "        except OSError as error:\n            print(pid, name, error)\n"
                f"print(os.path.exists('/proc/{holder.pid}'), os.path.exists('/proc/{os.getpid()}'))")
        result = run(code, output_chars=100_000)  # its own command line holds the guard's source
        assert result.status == "ok", result
        pids = {line.split()[0] for line in result.stdout.splitlines()[:-1]}
        assert pids <= {"1", "2"}  # the sandbox's own process (and bwrap's init)
        assert result.stdout.splitlines()[-1] == f"{holder.pid in (1, 2)} {os.getpid() in (1, 2)}"
        assert secret not in result.stdout and "pytest" not in result.stdout
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("code", [
    "import ctypes",
    "import _ctypes",
    "import ctypes.util",
    "__import__('ctypes')",
    "import importlib\nimportlib.import_module('ctypes')",
    "exec('import ctypes')",
    "try:\n    import ctypes\nexcept BaseException:\n    print('survived')",
])
def test_native_code_is_refused_like_a_process_start(strict, code):
    result = run(code)
    assert result.status == "killed" and "ctypes" in result.stderr and "not allowed" in result.stderr, result
    assert "survived" not in result.stdout
    assert still_works()


@pytest.mark.parametrize("folder", ["/", "/python", "/libs/0", "/proc", "{tmp}"])
def test_writing_through_a_directory_descriptor_reaches_nothing(strict, tmp_path, folder):
    """`dir_fd` slips past the audit hook: the kernel refuses, and the host folder does not exist inside."""
    code = (f"import os\nfolder = os.open({folder.format(tmp=tmp_path)!r}, os.O_RDONLY)\n"
            "os.close(os.open('escaped.txt', os.O_WRONLY | os.O_CREAT, dir_fd=folder))")
    result = run(code)
    assert result.status == "error", result
    assert any(reason in result.stderr for reason in ("Read-only file system", "No such file", "Permission denied"))
    assert not (tmp_path / "escaped.txt").exists()
    assert still_works()


def test_the_code_cannot_chroot_or_remount_its_way_out(strict):
    result = run("import os\nos.mkdir('x')\ntry:\n    os.chroot('x')\nexcept PermissionError as error:\n"
                 "    print('refused', error.errno)")
    assert (result.status, result.stdout) == ("ok", "refused 1\n")


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    os.fork()",
    "import os\nwhile True:\n    os.posix_spawn('/python/bin/python3', ['python3'], {})",
    "import subprocess\nwhile True:\n    subprocess.Popen(['python', '-c', 'pass'])",
    "import multiprocessing\nmultiprocessing.Process(target=print).start()",
])
def test_a_fork_bomb_is_stopped_at_the_first_fork(strict, code):
    result = run(code)
    assert result.status == "killed" and "not allowed" in result.stderr, result
    assert still_works()


@pytest.mark.parametrize("code", [
    "while True:\n    print('x' * 100000)",
    "import sys\nsys.stdout.write('y' * 10**8)",
    "open('big', 'w').write('z' * 10**8)",
])
def test_huge_output_is_cut_and_the_caller_is_not_flooded(strict, code):
    result = run(code, output_chars=1000, memory_mb=512)
    assert len(result.stdout) < 1200 and len(result.stderr) < 1200
    assert result.status in ("ok", "error", "timeout"), result
    assert still_works()


def test_sleeping_past_the_limit_is_a_timeout_and_the_next_run_starts_at_once(strict):
    began = time.monotonic()
    result = run("import time\ntime.sleep(3600)", seconds=1)
    assert result.status == "timeout" and time.monotonic() - began < 10
    assert still_works()
