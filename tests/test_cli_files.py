"""How the command line treats files a careful user cares about (issue 11, faults 1, 2, 5, 6, 11):
devices and FIFOs are written into, never replaced; ``-o /dev/null``-like targets need no
``-f``; an input is never its own output; concurrent writers never lose an output; the
round trip is byte-exact. Device nodes and FIFOs are made in a temporary folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import semcodec
from semcodec import fileio
from semcodec.fileio import OutputExistsError, write_output

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testkit import one_error_line, run_main

ROOT = Path(__file__).resolve().parents[1]
CAPTION = "A cat sleeping on a red sofa."


def make_null(path: Path) -> Path:
    """A character device with the null device's numbers (1, 3), in a temp folder."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    return path


def process(argv: list[str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "semcodec", *argv], cwd=cwd, env=env, input=stdin, capture_output=True,
        timeout=300, check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture(scope="module")
def packed(model) -> bytes:  # type: ignore[no-untyped-def]
    return semcodec.pack(CAPTION)


# -- 1, 2: special files are written into, never replaced --------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_a_device_output_is_written_into_not_replaced(
    force: bool, workdir: Path, packed: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    null = make_null(workdir / "mynull")
    (workdir / "c.sem").write_bytes(packed)
    (workdir / "c.txt").write_text(CAPTION)
    for argv in (["pack", "c.txt", "-o", "mynull", "-q"], ["unpack", "c.sem", "-o", "mynull"]):
        code, out, err = run_main(argv + (["-f"] if force else []), capsys)
        assert (code, out, err) == (0, "", "")
        assert stat.S_ISCHR(null.lstat().st_mode)  # still the device, not a regular file
        assert os.major(null.lstat().st_rdev) == 1 and os.minor(null.lstat().st_rdev) == 3
    assert sorted(p.name for p in workdir.iterdir()) == ["c.sem", "c.txt", "mynull"]  # no temp left


@pytest.mark.parametrize("force", [False, True])
def test_a_fifo_output_is_written_into(force: bool, workdir: Path, packed: bytes) -> None:
    fifo = workdir / "pipe"
    os.mkfifo(fifo)
    (workdir / "c.sem").write_bytes(packed)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    done = process(["unpack", "c.sem", "-o", "pipe", *(["-f"] if force else [])], workdir)
    reader.join(timeout=60)
    assert (done.returncode, done.stderr) == (0, b"")
    assert received == [CAPTION.encode()]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_our_own_stdout_path_is_written_into(workdir: Path, packed: bytes) -> None:
    """``-o /dev/stdout`` (here its target, ``/proc/self/fd/1``) needs no -f and replaces nothing."""
    (workdir / "c.sem").write_bytes(packed)
    if not Path("/proc/self/fd/1").exists():
        pytest.skip("no /proc")
    done = process(["unpack", "c.sem", "-o", "/proc/self/fd/1"], workdir)
    assert (done.returncode, done.stdout, done.stderr) == (0, CAPTION.encode(), b"")
    # stdout redirected to a regular file that already has content: appended to, not refused or replaced
    out = workdir / "out.txt"
    out.write_bytes(b"before:")
    with out.open("ab") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "semcodec", "unpack", "c.sem", "-o", "/proc/self/fd/1"], cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=handle, stderr=subprocess.PIPE, timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == b"before:" + CAPTION.encode()


def test_messages_name_the_whole_path(workdir: Path, packed: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "sub" / "dir").mkdir(parents=True)
    (workdir / "sub" / "dir" / "x.txt").write_bytes(b"precious")
    (workdir / "c.sem").write_bytes(packed)
    code, _, err = run_main(["unpack", "c.sem", "-o", "sub/dir/x.txt"], capsys)
    assert code == 1
    assert one_error_line(err) == "semcodec: error: sub/dir/x.txt already exists (use -f to overwrite)"


# -- 5: an input is never its own output --------------------------------------------------


def test_output_equal_to_input_is_refused_even_with_force(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = workdir / "same.txt"
    same.write_text(CAPTION)
    os.link(same, workdir / "alias.txt")
    (workdir / "sym.txt").symlink_to("same.txt")
    before = same.stat().st_mtime_ns
    for target in ("same.txt", "alias.txt", "sym.txt", "./same.txt"):
        code, out, err = run_main(["pack", "same.txt", "-o", target, "-f"], capsys)
        assert (code, out) == (1, "")
        assert "is the input same.txt: refusing to overwrite it" in one_error_line(err)
    assert same.read_text() == CAPTION and same.stat().st_mtime_ns == before


def test_stdin_file_as_output_is_refused(workdir: Path) -> None:
    (workdir / "a.txt").write_text(CAPTION)
    with (workdir / "a.txt").open("rb") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "semcodec", "pack", "-", "-o", "a.txt", "-f"], cwd=workdir, stdin=handle,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, timeout=300, check=False,
        )
    assert done.returncode == 1
    assert b"is the input standard input: refusing to overwrite it" in done.stderr
    assert (workdir / "a.txt").read_text() == CAPTION


# -- 6: byte-exact round trips ----------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"A\r\nB\r\n", b"No final newline", b"Two lines\nand one more\n", b"\n", b""])
def test_file_round_trip_is_byte_exact(
    raw: bytes, workdir: Path, model, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    (workdir / "in.txt").write_bytes(raw)
    assert run_main(["pack", "in.txt", "-o", "in.sem", "-q"], capsys)[0] == 0
    assert run_main(["unpack", "in.sem", "-o", "back.txt"], capsys)[0] == 0
    assert (workdir / "back.txt").read_bytes() == raw
    assert semcodec.unpack((workdir / "in.sem").read_bytes()).text == raw.decode()


# -- 11: no-clobber without a race; batches never overwrite their own outputs ------------------


def test_concurrent_writers_exactly_one_wins(tmp_path: Path) -> None:
    target = tmp_path / "out.sem"
    results: dict[int, str] = {}
    start = threading.Barrier(40)

    def writer(i: int) -> None:
        start.wait()
        try:
            write_output(target, f"writer {i}".encode())
            results[i] = "ok"
        except OutputExistsError:
            results[i] = "exists"

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "ok"]
    assert len(winners) == 1 and len(results) == 40
    assert target.read_bytes() == f"writer {winners[0]}".encode()  # the winner's output, whole
    assert [p.name for p in tmp_path.iterdir()] == ["out.sem"]  # no temp files left


def test_concurrent_processes_exactly_one_wins(tmp_path: Path) -> None:
    script = (
        "import sys; from semcodec.fileio import write_output, OutputExistsError\n"
        "try:\n    write_output(sys.argv[1], sys.argv[2].encode()); print('ok')\n"
        "except OutputExistsError:\n    print('exists')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "t"), f"p{i}"], env=env, stdout=subprocess.PIPE)
        for i in range(8)
    ]
    outs = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert sorted(outs) == ["exists"] * 7 + ["ok"]
    assert (tmp_path / "t").read_bytes() == f"p{outs.index('ok')}".encode()


@pytest.mark.parametrize("no_links", [errno.EPERM, errno.EOPNOTSUPP])
def test_no_replace_fallbacks_still_refuse(no_links: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system without hard links, renameat2(RENAME_NOREPLACE) (or an O_EXCL claim) is used."""

    def refuse_link(*args: object) -> None:
        raise OSError(no_links, os.strerror(no_links))

    monkeypatch.setattr(fileio.os, "link", refuse_link)
    write_output(tmp_path / "a", b"first")
    with pytest.raises(OutputExistsError):
        write_output(tmp_path / "a", b"second")
    monkeypatch.setattr(fileio, "_rename_noreplace", lambda tmp, target: False)
    write_output(tmp_path / "b", b"first")
    with pytest.raises(OutputExistsError):
        write_output(tmp_path / "b", b"second")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_batch_inputs_mapping_to_one_output_are_refused(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for d in ("da", "db", "out"):
        (workdir / d).mkdir()
    (workdir / "da" / "x.txt").write_text("A dog.")
    (workdir / "db" / "x.txt").write_text("A cat.")
    code, out, err = run_main(["pack", "da/x.txt", "db/x.txt", "-o", "out", "-f"], capsys)
    assert (code, out) == (1, "")
    assert "da/x.txt and db/x.txt would both be written to out/x.txt.sem" in one_error_line(err)
    assert list((workdir / "out").iterdir()) == []


def test_directory_as_the_output_of_one_input(
    workdir: Path, model, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    """An existing folder as -o means a folder, for one input as for many (a glob that matched one file)."""
    (workdir / "out").mkdir()
    (workdir / "a.txt").write_text(CAPTION)
    code, _, err = run_main(["pack", "a.txt", "-o", "out", "-q"], capsys)
    assert (code, err) == (0, "")
    assert semcodec.unpack((workdir / "out" / "a.txt.sem").read_bytes()).text == CAPTION


def test_batch_to_stdout_keeps_the_inputs_order(
    workdir: Path, model, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    """Outputs are written as files finish, but texts for stdout still come in the inputs' order."""
    long = "A small red cat with white paws sits on a green lawn under a bright blue sky.\n"
    (workdir / "long.sem").write_bytes(semcodec.pack(long))
    (workdir / "short.sem").write_bytes(semcodec.pack("A dog.\n"))
    code, out, err = run_main(["unpack", "long.sem", "short.sem"], capsys)
    assert (code, out, err) == (0, long + "A dog.\n", "")


def test_a_named_pipe_whose_reader_left_is_an_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """EPIPE on stdout is a reader that had enough (exit 0); on a named output it is an incomplete output."""
    make_null(workdir / "out")
    (workdir / "c.txt").write_text(CAPTION)

    def closed(fd: int, data: object) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(fileio.os, "write", closed)
    code, _, err = run_main(["pack", "c.txt", "-o", "out", "-q"], capsys)
    assert code == 1
    assert one_error_line(err) == "semcodec: error: out: Broken pipe"


def test_several_sem_files_are_never_concatenated_on_stdout(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .sem file has no length field: ``pack a b -o -`` would make one unreadable stream."""
    (workdir / "a.txt").write_text("A dog.")
    (workdir / "b.txt").write_text("A cat.")
    code, out, err = run_main(["pack", "a.txt", "b.txt", "-o", "-"], capsys)
    assert (code, out) == (1, "")
    assert "with several inputs, -o must name a folder (- is not one" in one_error_line(err)


# -- interruptions leave no temp file; outputs keep their input's permissions ---------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("where", ["create", "fsync", "place"])
def test_an_interrupted_write_leaves_no_temp_file(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C at the worst instants: just after the kernel made the temp file (before Python
    holds its descriptor), during the fsync, while putting it in place."""
    real_open = os.open

    def opened_then_interrupted(path: str, flags: int, mode: int = 0o777) -> int:
        os.close(real_open(path, flags, mode))
        raise KeyboardInterrupt

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    if where == "create":
        monkeypatch.setattr(fileio.os, "open", opened_then_interrupted)
    elif where == "fsync":
        monkeypatch.setattr(fileio.os, "fsync", interrupted)
    else:
        monkeypatch.setattr(fileio.os, "link", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_output(tmp_path / "out.sem", b"\xa7data")
    assert _leftovers(tmp_path) == [] and not (tmp_path / "out.sem").exists()


def test_sigterm_during_a_write_exits_143_and_leaves_nothing(
    workdir: Path, packed: bytes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM (and SIGHUP) take Ctrl-C's way out: the cleanup runs, one line, 128 + signal."""
    import signal

    (workdir / "c.sem").write_bytes(packed)
    real_fsync = os.fsync

    def terminated_midway(fd: int) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode: inside the write
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", terminated_midway)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run_main(["unpack", "c.sem", "-o", "c.txt"], capsys)
    assert code == 128 + signal.SIGTERM
    assert one_error_line(err) == "semcodec: error: terminated (SIGTERM)"
    assert sorted(p.name for p in workdir.iterdir()) == ["c.sem"]
    assert signal.getsignal(signal.SIGTERM) == before  # the command's handler is gone again


def test_ctrl_c_while_the_command_starts_is_one_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from semcodec import cli

    def interrupted(text_only: bool = False) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    code, _, err = run_main(["unpack", "c.sem"], capsys)
    assert (code, one_error_line(err)) == (130, "semcodec: error: interrupted")


def test_the_command_starts_without_numpy() -> None:
    """Importing the entry point stays light (numpy and the codec load inside main's handler)."""
    probe = "import sys, semcodec.cli; print('numpy' in sys.modules, 'semcodec.codec' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
    # ... and the package still hands out its names and submodules on first use, in a fresh process
    probe = ("import semcodec; print(semcodec.container.FORMAT_VERSION == semcodec.FORMAT_VERSION, "
             "semcodec.SemError.__module__, callable(semcodec.pack))")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "semcodec.errors", "True"]


def test_outputs_take_their_inputs_permissions(workdir: Path, packed: bytes) -> None:
    """A private input gives a private output, also over an existing file with -f (as gzip does)."""
    (workdir / "c.sem").write_bytes(packed)
    (workdir / "c.sem").chmod(0o600)
    (workdir / "old.txt").write_text("old")
    (workdir / "old.txt").chmod(0o644)
    for argv in (["unpack", "c.sem", "-o", "new.txt"], ["unpack", "c.sem", "-o", "old.txt", "-f"]):
        assert process(argv, workdir).returncode == 0
    assert stat.S_IMODE((workdir / "new.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((workdir / "old.txt").stat().st_mode) == 0o600
    assert (workdir / "old.txt").read_text() == CAPTION


def test_several_files_into_a_closed_pipe_is_not_an_error(workdir: Path, packed: bytes) -> None:
    """``unpack a.sem b.sem | head -c3``: the reader had enough; exit 0 and no message, as for one file."""
    for name in ("a.sem", "b.sem"):
        (workdir / name).write_bytes(packed)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OPENBLAS_NUM_THREADS": "1"}
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read
    try:
        done = subprocess.run([sys.executable, "-m", "semcodec", "unpack", "a.sem", "b.sem"], cwd=workdir, env=env,
                              stdout=write_end, stderr=subprocess.PIPE, timeout=300, check=False)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, b"")


def test_a_full_stdout_is_named(workdir: Path, packed: bytes) -> None:
    """Our own node with /dev/full's numbers (1, 7) as stdout: the message says where it failed."""
    (workdir / "c.sem").write_bytes(packed)
    full = workdir / "full"
    try:
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OPENBLAS_NUM_THREADS": "1"}
    with full.open("wb") as sink:
        done = subprocess.run([sys.executable, "-m", "semcodec", "unpack", "c.sem"], cwd=workdir, env=env,
                              stdout=sink, stderr=subprocess.PIPE, timeout=300, check=False)
    assert done.returncode == 1
    assert one_error_line(done.stderr.decode()) == "semcodec: error: standard output: No space left on device"


@pytest.mark.parametrize("folder", [False, True])
@pytest.mark.parametrize("ending", ["error", "interrupt", "replaced"])
def test_temp_beside_leaves_nothing_behind(folder: bool, ending: str, tmp_path: Path) -> None:
    """Every temp file or folder semcodec makes (outputs and the model cache) is gone after its
    block: after an error, an interruption, or when the block moved it into place."""
    target = tmp_path / "entry"
    with contextlib.suppress(OSError, KeyboardInterrupt), fileio.temp_beside(target, folder=folder) as tmp:
        assert Path(tmp).parent == tmp_path and Path(tmp).is_dir() == folder and Path(tmp).exists()
        (Path(tmp) / "part").write_bytes(b"x") if folder else Path(tmp).write_bytes(b"x")
        if ending == "error":
            raise OSError(errno.ENOSPC, "No space left on device")
        if ending == "interrupt":
            raise KeyboardInterrupt
        os.replace(tmp, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["entry"] if ending == "replaced" else [])


def test_a_context_that_cannot_be_saved_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while the evaluated context is written: the cache is best effort, and now tidy."""
    import types

    import numpy as np

    from semcodec import models

    def full_disk(handle: object, **arrays: object) -> None:
        handle.write(b"PK partial")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(models.np, "savez", full_disk)
    rows = np.zeros((1, 2, 1, 4), np.int32)
    state = types.SimpleNamespace(prefix=types.SimpleNamespace(keys=rows, values=rows), hidden=np.zeros((2, 4)))
    models._save_context(tmp_path / "context.npz", state)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
