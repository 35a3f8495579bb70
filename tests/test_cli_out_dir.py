"""Where a run writes: --out checked before any work (empty, under a file, read-only), and a full disk is one line."""

import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tandem.cli import app
from tandem.files import WriteError, check_writable_dir


def sft_args(model, out, *extra):
    return ["sft", "--model", str(model), "--out", str(out), "--task", "sentiment", "--max-steps", "2",
            "--batch-size", "2", "--n-eval", "0", "--no-progress", "--mixed-precision", "no", *extra]


@pytest.mark.parametrize("out, words", [("", "names the current directory"), (".", "names the current directory"),
                                        ("afile/run", "is a file, not a directory")])
def test_an_unusable_out_is_one_line_before_any_work(tmp_path, monkeypatch, tiny_model_dir, out, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    ran = CliRunner().invoke(app, sft_args(tiny_model_dir, out))
    assert ran.exit_code == 1 and words in ran.output and "Traceback" not in ran.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing written


def test_check_writable_dir_creates_the_folder_and_leaves_nothing_else(tmp_path):
    assert check_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list((tmp_path / "a" / "b").iterdir()) == []
    with pytest.raises(WriteError, match="current directory"):
        check_writable_dir("")
    assert check_writable_dir(".", allow_current=True)


def in_small_tmpfs(tmp_path, size: str, command: list[str], read_only: bool = False) -> subprocess.CompletedProcess:
    """Run `command` with a fresh tmpfs of `size` mounted at tmp_path/disk (a user+mount namespace: no root needed)."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed for the disk tests")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = f"mount -t tmpfs -o size={size} tmpfs {disk}" + (f" && mount -o remount,ro {disk}" if read_only else "")
    # after the command: what is left on the disk, then the command's exit status
    script = mount + " && " + " ".join(f"'{part}'" for part in command) + f"; rc=$?; ls -a {disk}/run; exit $rc"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600)


def test_a_read_only_out_is_refused_before_any_work(tmp_path, tiny_model_dir):
    ran = in_small_tmpfs(tmp_path, "1m", [sys.executable, "-m", "tandem.cli",
                                          *sft_args(tiny_model_dir, tmp_path / "disk" / "run")], read_only=True)
    assert ran.returncode == 1, ran.stderr
    assert "cannot write there: Read-only file system" in ran.stderr and "Traceback" not in ran.stderr


def test_a_full_disk_is_one_line_and_leaves_no_half_written_model(tmp_path, tiny_model_dir):
    out = tmp_path / "disk" / "run"
    ran = in_small_tmpfs(tmp_path, "400k", [sys.executable, "-m", "tandem.cli", *sft_args(tiny_model_dir, out)])
    assert ran.returncode == 1, ran.stderr
    assert "no space left on the device" in ran.stderr and "Traceback" not in ran.stderr
    assert len(ran.stderr.strip().splitlines()) <= 3
    left = ran.stdout.split()
    assert "model" not in left and ".model.tmp" not in left and "config.yaml" in left, left
