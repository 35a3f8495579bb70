"""What the kernel adds to the sandbox's own guard: namespaces that hide the host, or at least make it read-only.

Levels, best first (`isolation()` says which this machine allows; each is probed once, by running Python in it):

- ``strict``: the code sees nothing of the host. A new user, mount, PID and network namespace; inside, a root
  built on an empty tmpfs holds only the interpreter (at /python), the standard library, the shared libraries
  they load (at /libs), site-packages only when allowed (at /site; the interpreter's own are covered up),
  /dev/null, /dev/urandom, a fresh /proc of the new PID namespace and the work directory (at /work, the only
  writable place). The code runs in a nested user
  namespace where it has no capabilities (it cannot chroot out, remount or unmount), with an empty environment
  and a network of its own that has only loopback. `bwrap` builds this root where it is installed, else
  `unshare` (util-linux) with a shell script of `mount` calls.
- ``fallback``: ``unshare -rmn``: every mount read-only but the work directory, a network with only loopback, an
  empty environment. The code can still read what the user can (other processes, home directories).
- ``off``: nothing beyond the audit hook and resource limits; used only when asked for (`isolation="off"`).

The interpreter is started through its dynamic loader (``ld.so --library-path /libs/0:...``): the loader then
needs no /etc/ld.so.cache and no library at the host's paths, which may lie under /root or /home.
"""

from __future__ import annotations

import functools
import glob
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Level = Literal["strict", "fallback", "off"]
Wanted = Literal["auto", "strict", "fallback", "off"]
WANTED: tuple[str, ...] = ("auto", "strict", "fallback", "off")
ENVIRONMENT_VARIABLE = "TANDEM_SANDBOX_ISOLATION"
WORK_INSIDE = "/work"


class SandboxUnavailable(RuntimeError):
    """The isolation asked for (by default: strict, else fallback) cannot be had on this machine."""


@dataclass(frozen=True)
class Launch:
    """How to start the interpreter at one level: the command up to the interpreter's own options, the work
    directory as the code sees it, and the site-packages directories to add (as the code sees them)."""

    argv: list[str]
    work: str
    site_dirs: list[str]


@dataclass(frozen=True)
class StrictRoot:
    """The strict root's contents: (host path, path inside) pairs lent read-only, and the interpreter's command."""

    binds: tuple[tuple[str, str], ...]
    command: tuple[str, ...]
    site_dirs: tuple[str, ...]
    hidden: tuple[str, ...]  # folders inside the binds covered by an empty tmpfs (the base site-packages)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _inside(path: str, base: str, mount: str) -> str:
    """Where a host path under `base` sits below `mount` in the new root (only its name, when not under base)."""
    return f"{mount}/{os.path.relpath(path, base) if _under(path, base) else os.path.basename(path)}"


def _libraries(files: list[str]) -> tuple[str | None, list[str]]:
    """The dynamic loader and the directories of the shared libraries `files` need (`ldd`), in the order found."""
    ldd = shutil.which("ldd") or "/usr/bin/ldd"
    output = subprocess.run([ldd, *files], capture_output=True, text=True, timeout=60).stdout
    loader, folders = None, []
    for line in output.splitlines():
        line = line.strip()
        if "=>" in line:
            path = line.split("=>", 1)[1].strip().split(" (", 1)[0]
        elif line.startswith("/") and not line.endswith(":"):
            path = loader = line.split(" (", 1)[0]
        else:
            continue
        if path.startswith("/"):  # "not found" and the vdso have no path
            for folder in (os.path.realpath(os.path.dirname(path)), os.path.dirname(os.path.realpath(path))):
                if folder not in folders:
                    folders.append(folder)
    return (os.path.realpath(loader) if loader else None), folders


def site_packages() -> list[str]:
    """The directories installed packages live in (the virtual environment's, when in one)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(os.path.realpath(paths[key]) for key in ("purelib", "platlib") if os.path.isdir(paths[key])))


@functools.cache
def strict_root(with_site_packages: bool) -> StrictRoot:
    """What the strict root lends from the host, found once: the interpreter, its standard library, its shared
    libraries (a layout this cannot map fails the probe, and the sandbox falls back)."""
    base = os.path.realpath(sys.base_prefix)
    executable = os.path.realpath(sys.executable)
    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    python = _inside(executable, base, "/python")
    binds = [(executable, python), (stdlib, _inside(stdlib, base, "/python"))]
    dynload = next((os.path.realpath(p) for p in sys.path if p.endswith("lib-dynload") and os.path.isdir(p)), None)
    if dynload and not _under(dynload, stdlib):
        binds.append((dynload, _inside(dynload, os.path.realpath(sys.base_exec_prefix), "/python")))
    loader, folders = _libraries([executable, *sorted(glob.glob(os.path.join(dynload or stdlib, "*.so")))])
    libs = [f"/libs/{index}" for index in range(len(folders))]
    binds += zip(folders, libs)
    site = [(folder, f"/site/{index}") for index, folder in enumerate(site_packages() if with_site_packages else [])]
    binds += site
    if loader is not None:
        binds.append((loader, "/libs/ld.so"))
    command = ("/libs/ld.so", "--library-path", ":".join(libs), python) if loader else (python,)  # else: static
    base_site = {os.path.realpath(path) for key, path in sysconfig.get_paths(
        vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix}).items() if key in ("purelib", "platlib")}
    hidden = sorted({f"{inside}/{os.path.relpath(folder, source)}" for source, inside in binds for folder in base_site
                     if os.path.isdir(folder) and folder != source and _under(folder, source)})
    return StrictRoot(tuple(binds), command, tuple(inside for _, inside in site), tuple(hidden))


@functools.cache
def _unshare_script(root: StrictRoot) -> str:
    """The shell script that builds the strict root in new namespaces, then runs "$@" in it with no capabilities."""
    q = shlex.quote
    targets = [(source, inside.lstrip("/")) for source, inside in root.binds]
    folders = {t if os.path.isdir(s) else os.path.dirname(t) for s, t in targets} | {"dev", "proc", "work"}
    files = [t for s, t in targets if not os.path.isdir(s)] + ["dev/null", "dev/urandom"]
    steps = ['mount -t tmpfs -o mode=755,size=1m tmpfs "$new"', 'cd "$new"',
             "mkdir -p " + " ".join(map(q, sorted(folders))), "touch " + " ".join(map(q, files)),
             *(f"mount --bind -o ro {q(source)} {q(target)}" for source, target in targets),
             *(f"mount -t tmpfs -o ro,size=4k tmpfs {q(folder.lstrip('/'))}" for folder in root.hidden),
             "mount --bind /dev/null dev/null", "mount --bind /dev/urandom dev/urandom", 'mount --bind "$work" work',
             "mount -t proc -o nosuid,nodev,noexec proc proc", 'mount -o remount,ro "$new"']
    return "\n".join([
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "new=$1 work=$2; shift 2",
        "{ " + " &&\n  ".join(steps) + "\n} || exit 125",
        "cd / && unset PWD OLDPWD",  # sh exports these; the code gets no environment
        # a nested user namespace with no mapping: the code has no capabilities (no chroot out, no remount)
        f'exec unshare -U --root="$new" --wd={WORK_INSIDE} "$@"',
    ])


def _bwrap_arguments(root: StrictRoot, work: str) -> list[str]:
    """bwrap's options for the same root (it sets PWD whatever it is told: the child's guard clears it)."""
    binds = [arg for source, inside in root.binds for arg in ("--ro-bind", source, inside)]
    binds += [arg for folder in root.hidden for arg in ("--tmpfs", folder, "--remount-ro", folder)]
    return ["--unshare-all", "--unshare-user", "--cap-drop", "ALL", "--die-with-parent", "--clearenv", *binds,
            "--dev-bind", "/dev/null", "/dev/null", "--dev-bind", "/dev/urandom", "/dev/urandom",
            "--bind", work, WORK_INSIDE, "--proc", "/proc", "--remount-ro", "/", "--chdir", WORK_INSIDE, "--"]


# In new user + mount + network namespaces: every mount read-only but the work directory, then the child.
_READ_ONLY_MOUNTS = r"""
PATH=/usr/sbin:/usr/bin:/sbin:/bin
work=$1; shift
mount --bind "$work" "$work" || exit 125
for point in $(awk '{print $2}' /proc/self/mounts | sort -u); do mount -o remount,bind,ro "$point" 2>/dev/null; done
mount -o remount,bind,rw "$work" || exit 125
exec env -i "$@"  # sh adds PWD and friends; the child gets none
"""


def launch(level: Level, scratch: Path, with_site_packages: bool, mechanism: str | None = None) -> Launch:
    """The command that starts the interpreter at `level` for a run whose files are in `scratch` (its `work`
    directory is the code's; an empty `root` directory beside it is where the strict root is mounted)."""
    work = str((scratch / "work").resolve())
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    if level == "off":
        return Launch([sys.executable], work, site_packages() if with_site_packages else [])
    if level == "fallback":
        return Launch([unshare, "-rmn", "sh", "-c", _READ_ONLY_MOUNTS, "sh", work, sys.executable], work,
                      site_packages() if with_site_packages else [])
    root = strict_root(with_site_packages)
    if (mechanism or _strict_mechanism()) == "bwrap":
        return Launch([shutil.which("bwrap") or "bwrap", *_bwrap_arguments(root, work), *root.command],
                      WORK_INSIDE, list(root.site_dirs))
    (scratch / "root").mkdir(exist_ok=True)
    return Launch([unshare, "-rmnpf", "--kill-child", "sh", "-c", _unshare_script(root), "sh",
                   str((scratch / "root").resolve()), work, *root.command], WORK_INSIDE, list(root.site_dirs))


# Run in the probe: the standard library's native modules load, and at `strict` nothing of the host shows.
_PROBE = "import math, json, hashlib, decimal, os; print('ok')"
_STRICT_PROBE = _PROBE + """
assert not os.path.exists('/etc') and not os.path.exists('/root') and not os.path.exists('/home')
assert len([p for p in os.listdir('/proc') if p.isdigit()]) <= 2 and not os.environ.get('HOME')
try:
    os.chroot('/work')
except PermissionError:
    pass
else:
    raise SystemExit('the code has capabilities')
"""

_FALLBACK_PROBE = """
open({inside!r}, 'w').close()
try:
    open({outside!r}, 'w')
except OSError:
    pass
else:
    raise SystemExit('the file system is writable')
"""


def _probe(level: Level, mechanism: str | None = None) -> bool:
    with tempfile.TemporaryDirectory(prefix="tandem-sandbox-probe-") as folder:
        scratch = Path(folder)
        (scratch / "work").mkdir()
        try:
            start = launch(level, scratch, False, mechanism)
            code = _STRICT_PROBE if level == "strict" else _PROBE + _FALLBACK_PROBE.format(
                inside=start.work + "/ok", outside=str(scratch / "outside"))
            done = subprocess.run([*start.argv, "-I", "-S", "-c", code], capture_output=True, timeout=60, env={},
                                  cwd=scratch / "work")
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0 and done.stdout.startswith(b"ok")


@functools.cache
def _strict_mechanism() -> str | None:
    """`bwrap` where installed and working, else `unshare`, else None (strict isolation is unavailable)."""
    if not sys.platform.startswith("linux"):
        return None
    for mechanism in ("bwrap", "unshare"):
        if shutil.which(mechanism) and shutil.which("ldd") and _probe("strict", mechanism):
            return mechanism
    return None


@functools.cache
def _works(level: Level) -> bool:
    if level == "off":
        return True
    if level == "strict":
        return _strict_mechanism() is not None
    return sys.platform.startswith("linux") and shutil.which("unshare") is not None and _probe("fallback")


def isolation() -> Level:
    """The best level this machine allows (probed once)."""
    return "strict" if _works("strict") else "fallback" if _works("fallback") else "off"


def choose_isolation(wanted: str | None = None) -> Level:
    """The level a run gets: `wanted` (None: the TANDEM_SANDBOX_ISOLATION variable, else "auto": strict where
    available, else fallback). Raises SandboxUnavailable rather than run model-written code with the audit hook
    alone, unless "off" is asked for."""
    wanted = wanted or os.environ.get(ENVIRONMENT_VARIABLE) or "auto"
    if wanted not in WANTED:
        raise ValueError(f"sandbox isolation must be one of {', '.join(WANTED)}, got {wanted!r}")
    if wanted == "off":
        return "off"
    candidates: tuple[Level, ...] = ("strict", "fallback") if wanted == "auto" else (wanted,)  # type: ignore[assignment]
    for level in candidates:
        if _works(level):
            return level
    need = ("user namespaces (bwrap, or unshare from util-linux, with kernel.unprivileged_userns_clone=1)"
            if wanted != "strict" else "bwrap, or unshare and ldd, with user, mount and PID namespaces")
    raise SandboxUnavailable(
        f"the Python sandbox cannot get {'any' if wanted == 'auto' else wanted} isolation here: it needs {need}. "
        f"To run model-written code with only the audit hook and resource limits, set {ENVIRONMENT_VARIABLE}=off "
        "(or SandboxLimits(isolation='off'), or isolation=off in a verifier:code, code task or tools env spec)")
