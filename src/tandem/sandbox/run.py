"""Run model-written Python in a fresh, limited interpreter, and run a solution against its tests.

The limits are set by the child itself, not in a `preexec_fn`: the parent is a training process with threads
(torch, tokenizers), where `preexec_fn` can deadlock (see the `subprocess` documentation).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tandem.sandbox.namespaces import choose_isolation, launch

Status = Literal["ok", "error", "timeout", "memory", "network", "write", "killed"]

# exit codes the child's guard uses to say why it stopped (the hook exits at once: the code cannot catch it)
_EXIT_CODES: dict[int, Status] = {120: "timeout", 121: "network", 122: "write", 123: "killed", 124: "memory"}
_SETUP_FAILED = 125  # the isolation could not be set up (the shell that builds it says why on stderr)


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. `seconds` is wall time; CPU time is limited to the same (rounded up).

    `isolation`: "auto" (strict where available, else fallback), "strict", "fallback" or "off" (the audit hook
    and limits only, never chosen unless asked for); None reads the TANDEM_SANDBOX_ISOLATION variable, else "auto".
    """

    seconds: float = 5.0
    memory_mb: int = 512  # address space (RLIMIT_AS)
    file_mb: int = 16  # largest file written, stdout and stderr included (RLIMIT_FSIZE)
    open_files: int = 64
    output_chars: int = 4000  # stdout and stderr are each cut to this many characters
    site_packages: bool = False  # let the code import installed packages (numpy, ...), not only the stdlib
    isolation: str | None = None


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    status: Status
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# Runs in the child before the user's code: limits, then the audit hook, then site-packages, then main.py.
_BOOTSTRAP = r'''
def _sandbox():  # one function: the guard's names are closure cells, not globals the code could rebind
    import os, resource, signal, sys
    root, seconds, memory, fsize, nofile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    site_dirs = sys.argv[6:]
    for limit, soft, hard in ((resource.RLIMIT_CPU, seconds, seconds + 1), (resource.RLIMIT_AS, memory, memory),
                              (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NOFILE, nofile, nofile),
                              (resource.RLIMIT_NPROC, 0, 0), (resource.RLIMIT_CORE, 0, 0)):
        try:
            resource.setrlimit(limit, (soft, hard))
        except (ValueError, OSError):  # e.g. a hard limit already lower
            pass
    source = open(os.path.join(root, "main.py"), encoding="utf-8").read()
    os.chdir(root)
    os.environ.clear()  # bwrap sets PWD; Python's locale coercion adds LC_CTYPE
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    _exit, _write, _fspath, _real = os._exit, os.write, os.fspath, os.path.realpath
    _join, _cwd, _isabs, _dirname, _frame = os.path.join, os.getcwd, os.path.isabs, os.path.dirname, sys._getframe
    STDLIB = _dirname(os.__file__)
    MACHINERY = (os.path.join(STDLIB, "importlib"), os.path.join(STDLIB, "ctypes"))
    PATH_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.chmod": (0,),
                   "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,), "os.symlink": (1,), "os.link": (0, 1),
                   "os.chflags": (0,), "os.lchflags": (0,), "os.lchmod": (0,), "shutil.rmtree": (0,),
                   "os.mkfifo": (0,), "os.mknod": (0,), "os.setxattr": (0,), "os.removexattr": (0,)}
    NETWORK = ("socket.",)
    PROCESS = ("subprocess.", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
               "pty.", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.", "resource.setrlimit",
               "resource.prlimit", "os.startfile", "winreg.", "_posixsubprocess.")

    def stop(code, what):
        try:
            sys.stdout.flush()  # what the code printed before it was stopped
        except BaseException:
            pass
        _write(2, ("\nsandbox: " + what + "\n").encode())
        _exit(code)

    def inside(path):
        if isinstance(path, int):
            return True  # an open descriptor (stdout, stderr)
        path = _fspath(path)
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        if path in ("/dev/null",):
            return True
        full = _real(path if _isabs(path) else _join(_cwd(), path))
        return full == root or full.startswith(root + "/")

    def native(name):
        """ctypes: the model's own import stops the run; a library's (numpy tries it) gets an ImportError."""
        frame = _frame(2)
        while frame is not None and (frame.f_code.co_filename.startswith("<frozen")
                                     or _dirname(frame.f_code.co_filename) in MACHINERY):
            frame = frame.f_back
        if frame is None or frame.f_code.co_filename.startswith("<"):  # "<python>", or a string it compiled
            stop(123, f"importing {name} (native code) is not allowed")
        raise ImportError(f"{name} is not available in the sandbox")

    def guard(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = bool((flags or 0) & WRITE_FLAGS) or any(c in (mode or "") for c in "wax+")
            if writing and not inside(path):
                stop(122, f"writing {path!r} outside the sandbox directory is not allowed")
        elif event in PATH_EVENTS:
            for index in PATH_EVENTS[event]:
                if index < len(args) and not inside(args[index]):
                    stop(122, f"{event} on {args[index]!r} outside the sandbox directory is not allowed")
        elif event == "import" and args[0].partition(".")[0] in ("ctypes", "_ctypes"):
            native(args[0])
        elif event.startswith(NETWORK):
            stop(121, f"network access is not allowed ({event})")
        elif event.startswith(PROCESS):
            stop(123, f"{event} is not allowed")

    # A PID namespace's first process ignores signals it has no handler for: SIGXCPU gets one.
    signal.signal(signal.SIGXCPU, lambda *_: stop(120, f"stopped after {seconds} s of CPU time"))
    sys.addaudithook(guard)
    del resource
    if site_dirs:
        import site
        for folder in site_dirs:
            site.addsitedir(folder)
    try:
        code = compile(source, "<python>", "exec")
        del source
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except MemoryError:
        stop(124, f"out of memory (limit {memory // 2**20} MB)")
    except SystemExit:
        raise
    except BaseException as error:
        import traceback
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        sys.stdout.flush()
        sys.stderr.flush()
        _exit(1)


_sandbox()
'''


def _read(path: Path, limit: int) -> str:
    """The first `limit` characters of an output file, with a note of how much was cut."""
    with open(path, "rb") as f:
        data = f.read(4 * limit + 4)  # utf-8 is at most 4 bytes a character
    text = data.decode("utf-8", "replace")
    if len(text) <= limit and len(data) == path.stat().st_size:
        return text
    return f"{text[:limit]}\n... [output cut at {limit} characters; {path.stat().st_size} bytes in all]"


def run_python(code: str, limits: SandboxLimits | None = None, stdin: str = "") -> SandboxResult:
    """Run `code` in a fresh sandboxed interpreter and report what it printed and how it ended.

    Raises SandboxUnavailable when the isolation asked for (by default: any) cannot be had here."""
    limits = limits or SandboxLimits()
    level = choose_isolation(limits.isolation)
    scratch = Path(tempfile.mkdtemp(prefix="tandem-sandbox-"))
    root = scratch / "work"  # the only directory the code may write in; its output files sit beside it
    root.mkdir()
    (root / "main.py").write_text(code, encoding="utf-8")
    start = launch(level, scratch, limits.site_packages)
    command = [*start.argv, "-I", "-S", "-X", "utf8", "-c", _BOOTSTRAP, start.work,
               str(max(1, int(-(-limits.seconds // 1)))), str(limits.memory_mb * 2**20), str(limits.file_mb * 2**20),
               str(limits.open_files), *start.site_dirs]
    began = time.monotonic()
    timed_out = False
    try:
        with open(scratch / "stdout", "wb") as out, open(scratch / "stderr", "wb") as err:
            process = subprocess.Popen(command, cwd=root, env={}, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                       start_new_session=True)
            try:
                process.communicate(stdin.encode(), timeout=limits.seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:  # the whole group: anything the code managed to start goes too
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                process.wait()
        seconds = time.monotonic() - began
        stdout = _read(scratch / "stdout", limits.output_chars)
        stderr = _read(scratch / "stderr", limits.output_chars)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    exit_code = process.returncode
    if timed_out or exit_code == -signal.SIGXCPU:
        status: Status = "timeout"
        stderr += f"\nsandbox: stopped after {limits.seconds:g} s"
    elif exit_code == 0:
        status = "ok"
    elif exit_code in _EXIT_CODES:
        status = _EXIT_CODES[exit_code]
    elif exit_code == _SETUP_FAILED:
        status = "killed"
        stderr += f"\nsandbox: the {level} isolation could not be set up"
    elif exit_code < 0:
        status = "killed"
        stderr += f"\nsandbox: killed by {signal.Signals(-exit_code).name}"
    else:
        status = "error"
    stderr = stderr.strip("\n")
    return SandboxResult(stdout, stderr + "\n" if stderr else "", status, seconds)


def run_tests(solution: str, tests: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `solution`, then `tests` (Python asserts) after it in the same program: status "ok" only when every
    test ran and passed. What the solution prints is discarded (stdout holds only the verdict), and a program
    that ends early with status 0 (`sys.exit(0)`, `os._exit(0)` before the asserts) is an "error"."""
    done = secrets.token_hex(16)
    program = (f"__import__('sys').stdout = open('/dev/null', 'w')\n{solution}\n\n{tests}\n\n"
               f"__import__('os').write(1, b'{done}\\n')\n")
    result = run_python(program, limits)
    if result.ok and result.stdout != f"{done}\n":
        return SandboxResult("", result.stderr + "sandbox: the program ended before its tests finished\n", "error",
                             result.seconds)
    return SandboxResult("", result.stderr, result.status, result.seconds)
