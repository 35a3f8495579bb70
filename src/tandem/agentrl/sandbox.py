"""Run model-written Python with limits: the `python` tool's engine.

    result = run_python("print(sum(range(10)))")   # SandboxResult(stdout='45\\n', stderr='', status='ok', ...)

Each call is a fresh interpreter (`python -I -S`: no site-packages, no PYTHON* variables, an empty
environment) in a fresh temporary directory, its own process group killed at the wall-time limit. Before the
code runs, the child sets its resource limits (CPU seconds, address space, file size, open files, processes,
no core files) and installs an audit hook (PEP 578) that stops it at the first socket, process start, native
library load, signal to another process, or write outside its directory. Audit hooks are a guard, not a
boundary (`os.open` with a `dir_fd`, or `ctypes.memmove` on the interpreter, gets past them), so where user
namespaces are allowed (`isolation()`; `unshare -rmn`) the child also runs with every mount read-only but its
directory and with a network of its own that has only loopback: the kernel then refuses what slips past.

Statuses: ``ok``; ``error`` (the code raised or exited non-zero); ``timeout`` (wall time or CPU seconds);
``memory`` (the address-space limit); ``network`` (a socket or name lookup); ``write`` (a file written,
removed or linked outside the directory); ``killed`` (another forbidden operation: starting a process,
loading native code, signalling; or a signal).

The limits are set by the child itself, not in a `preexec_fn`: the parent is a training process with
threads (torch, tokenizers), where `preexec_fn` can deadlock (see the `subprocess` documentation).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["ok", "error", "timeout", "memory", "network", "write", "killed"]

# exit codes the child's guard uses to say why it stopped (the hook exits at once: the code cannot catch it)
_EXIT_CODES: dict[int, Status] = {121: "network", 122: "write", 123: "killed", 124: "memory"}


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. `seconds` is wall time; CPU time is limited to the same (rounded up)."""

    seconds: float = 5.0
    memory_mb: int = 512  # address space (RLIMIT_AS)
    file_mb: int = 16  # largest file written, stdout and stderr included (RLIMIT_FSIZE)
    open_files: int = 64
    output_chars: int = 4000  # stdout and stderr are each cut to this many characters
    site_packages: bool = False  # let the code import installed packages (numpy, ...), not only the stdlib


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    status: Status
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# Runs in the child before the user's code: limits, then the audit hook, then the code from main.py.
_BOOTSTRAP = r'''
def _sandbox():  # one function: the guard's names are closure cells, not globals the code could rebind
    import os, resource, sys
    root, seconds, memory, fsize, nofile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    for limit, value in ((resource.RLIMIT_CPU, seconds), (resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, fsize),
                         (resource.RLIMIT_NOFILE, nofile), (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):  # e.g. a hard limit already lower
            pass
    source = open(os.path.join(root, "main.py"), encoding="utf-8").read()
    os.chdir(root)
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    _exit, _write, _fspath, _real = os._exit, os.write, os.fspath, os.path.realpath
    _join, _cwd, _isabs = os.path.join, os.getcwd, os.path.isabs
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
        elif event == "ctypes.dlopen" and args[0] is None:
            pass  # `import ctypes` opens the interpreter itself (numpy imports ctypes); looking up a symbol is stopped
        elif event.startswith(NETWORK):
            stop(121, f"network access is not allowed ({event})")
        elif event.startswith(PROCESS):
            stop(123, f"{event} is not allowed")

    sys.addaudithook(guard)
    del resource
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


# In new user + mount + network namespaces: every mount read-only but the work directory, then the child.
_READ_ONLY_MOUNTS = r"""
PATH=/usr/sbin:/usr/bin:/sbin:/bin
work=$1; shift
mount --bind "$work" "$work" || exit 125
for point in $(awk '{print $2}' /proc/self/mounts | sort -u); do mount -o remount,bind,ro "$point" 2>/dev/null; done
mount -o remount,bind,rw "$work" || exit 125
exec env -i "$@"  # sh adds PWD and friends; the child gets none
"""
Isolation = Literal["filesystem+network", "network", "none"]


@functools.cache
def isolation() -> Isolation:
    """What the kernel lets the sandbox add to its guard (probed once): namespaces where the whole file system
    is read-only but the work directory and the network has only loopback, a network namespace alone, or none."""
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    if not sys.platform.startswith("linux") or not os.path.exists(unshare):
        return "none"
    with tempfile.TemporaryDirectory(prefix="tandem-sandbox-probe-") as work:
        probe = [unshare, "-rmn", "sh", "-c", _READ_ONLY_MOUNTS, "sh", work, "sh", "-c",
                 f"echo > {work}/ok && ! (echo > /proc/sys/tandem-probe) 2>/dev/null"]
        for level, command in (("filesystem+network", probe), ("network", [unshare, "-rn", "true"])):
            try:
                if subprocess.run(command, capture_output=True, timeout=20).returncode == 0:
                    return level  # type: ignore[return-value]
            except (OSError, subprocess.SubprocessError):
                pass
    return "none"


def _isolation_prefix(root: Path) -> list[str]:
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    level = isolation()
    if level == "filesystem+network":
        return [unshare, "-rmn", "sh", "-c", _READ_ONLY_MOUNTS, "sh", str(root)]
    return [unshare, "-rn"] if level == "network" else []


def _read(path: Path, limit: int) -> str:
    """The first `limit` characters of an output file, with a note of how much was cut."""
    with open(path, "rb") as f:
        data = f.read(4 * limit + 4)  # utf-8 is at most 4 bytes a character
    text = data.decode("utf-8", "replace")
    if len(text) <= limit and len(data) == path.stat().st_size:
        return text
    return f"{text[:limit]}\n... [output cut at {limit} characters; {path.stat().st_size} bytes in all]"


def run_python(code: str, limits: SandboxLimits | None = None, stdin: str = "") -> SandboxResult:
    """Run `code` in a fresh sandboxed interpreter and report what it printed and how it ended."""
    limits = limits or SandboxLimits()
    scratch = Path(tempfile.mkdtemp(prefix="tandem-sandbox-"))
    root = scratch / "work"  # the only directory the code may write in; its output files sit beside it
    root.mkdir()
    (root / "main.py").write_text(code, encoding="utf-8")
    flags = [] if limits.site_packages else ["-S"]
    command = [*_isolation_prefix(root.resolve()), sys.executable, "-I", *flags, "-X", "utf8", "-c", _BOOTSTRAP,
               str(root.resolve()), str(max(1, int(-(-limits.seconds // 1)))), str(limits.memory_mb * 2**20),
               str(limits.file_mb * 2**20), str(limits.open_files)]
    start = time.monotonic()
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
        seconds = time.monotonic() - start
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
    elif exit_code < 0:
        status = "killed"
        stderr += f"\nsandbox: killed by {signal.Signals(-exit_code).name}"
    else:
        status = "error"
    stderr = stderr.strip("\n")
    return SandboxResult(stdout, stderr + "\n" if stderr else "", status, seconds)
