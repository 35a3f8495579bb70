"""Run model-written Python with limits: the `python` tool's engine and the `verifier:code` reward's.

    result = run_python("print(sum(range(10)))")   # SandboxResult(stdout='45\\n', stderr='', status='ok', ...)
    run_tests("def f(x):\n    return 2 * x", "assert f(2) == 4").status   # 'ok'

Each call is a fresh interpreter (`python -I -S`: no site-packages unless allowed, no PYTHON* variables, an
empty environment) in a fresh temporary directory, its own process group killed at the wall-time limit. Two
layers keep the code in:

- the kernel (`isolation`): by default the code runs in namespaces where it sees nothing of the host: a root of
  its own with only the interpreter, the standard library, /dev/null, /dev/urandom, its own /proc and its work
  directory; no other process, no network, no environment, no capabilities. Where that root cannot be built it
  falls back to read-only mounts; where neither works, the sandbox refuses to run unless told
  `isolation="off"` (or TANDEM_SANDBOX_ISOLATION=off).
- the child's own guard: before the code runs, it sets its resource limits (CPU seconds, address space, file
  size, open files, processes, no core files) and installs an audit hook (PEP 578) that stops it at the first
  socket, process start, import of `ctypes`, signal to another process, or write outside its directory. Audit
  hooks are a guard, not a boundary (`os.open` with a `dir_fd` gets past them): the kernel refuses what slips by.

Statuses: ``ok``; ``error`` (the code raised or exited non-zero); ``timeout`` (wall time or CPU seconds);
``memory`` (the address-space limit); ``network`` (a socket or name lookup); ``write`` (a file written,
removed or linked outside the directory); ``killed`` (another forbidden operation: starting a process,
importing native code, signalling; or a signal).

This package sits at the bottom of tandem's layers (it imports nothing of tandem): tools, tasks and rewards
all run code through it.
"""

from tandem.sandbox.namespaces import ENVIRONMENT_VARIABLE, SandboxUnavailable, choose_isolation, isolation
from tandem.sandbox.run import SandboxLimits, SandboxResult, Status, run_python, run_tests

__all__ = ["ENVIRONMENT_VARIABLE", "SandboxLimits", "SandboxResult", "SandboxUnavailable", "Status",
           "choose_isolation", "isolation", "run_python", "run_tests"]
