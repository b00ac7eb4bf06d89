"""Running pg_dump / pg_restore as child processes, safely.

- Credentials reach the child as ``shared.pgtools.libpq_target`` prepares
  them: never on a command line, in a minimal environment; the child starts
  through ``shared.pgtools.spawn_client``, so it dies with the job.
- stderr is drained by a thread (a full stderr pipe would freeze the child)
  and only its tail is kept, redacted, for error messages.
- Restores stream the archive (``archive.Archive``: checksummed, decrypted
  when encrypted) into pg_restore's stdin, and hold back the last chunk
  until the SHA-256 of every stored byte matches the manifest. A dump
  written through a pipe ends with the end of its last data block, so
  pg_restore cannot reach its COMMIT before that chunk: a corrupt or
  tampered backup is never committed into the target. A stored object
  longer than the manifest says is refused as soon as a read passes that
  size, before the chunk held back (then the archive's end) is fed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import deque
from typing import TYPE_CHECKING, Callable, Sequence

from psycopg import conninfo as pg_conninfo

from safesync.shared.errors import JobFailed, Refused, SafesyncError
from safesync.shared.log import redact
from safesync.shared.pgerrors import failure
from safesync.shared.pgtools import spawn_client, stop_client

if TYPE_CHECKING:
    from .archive import Archive

CHUNK = 1 << 20
PIPE_SIZE = 1 << 20
Progress = Callable[[int], None]

def dbname_of(url: str) -> str:
    return str(pg_conninfo.conninfo_to_dict(url).get("dbname", ""))


class PgProcess:
    """A running pg tool whose stderr tail is kept for error messages."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], *, stdin: int | None = None, stdout: int | None = None) -> None:
        self.tool = os.path.basename(argv[0])
        self.proc = spawn_client(list(argv), env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, cwd="/")
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                _grow_pipe(pipe.fileno())
        self._stderr: deque[str] = deque(maxlen=60)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr.append(raw.decode("utf-8", errors="replace").rstrip())

    def wait(self) -> int:
        code = self.proc.wait()
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        """Stop the child if it still runs (idempotent)."""
        stop_client(self.proc)
        self.wait()  # and its stderr read to the end

    def stderr_text(self, lines: int = 8) -> str:
        return redact("\n".join(list(self._stderr)[-lines:]))

    def failure(self, code: int) -> str:
        """``pg_dump exited with 1: <its last error lines>``."""
        how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        tail = self.stderr_text()
        return f"{self.tool} {how}" + (f": {tail}" if tail else "")

    def feed(self, chunk: bytes) -> bool:
        """Write to stdin; False once the child stopped reading."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(chunk)
            return True
        except (BrokenPipeError, ValueError):
            return False

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass


def _grow_pipe(fd: int) -> None:
    """Bigger pipe buffers mean fewer context switches per MiB (Linux only)."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, AttributeError, OSError):
        pass


def _mismatch(source: "Archive", *, committed: bool) -> None:
    """Raise for a dump that does not match its manifest: Refused when
    pg_restore is stopped before its COMMIT (nothing restored), JobFailed
    saying so when it had already finished on its own — never claim the
    target untouched when it was not."""
    backup_id, info = source.info.id, source.info
    facts = f"read {source.size} of {info.size} bytes, sha256 {source.sha256[:12]}… vs {info.sha256[:12]}…"
    if committed:
        raise JobFailed(
            f"backup {backup_id} does not match its manifest ({facts}), and pg_restore had already committed "
            "what it read before the end of the dump: the target WAS changed; restore the safety backup taken before to undo it",
            {"backup": backup_id, "committed": True},
        )
    raise Refused(f"backup {backup_id} does not match its manifest ({facts}): nothing was restored", {"backup": backup_id})


def restore_stream(source: "Archive", *, argv: Sequence[str], env: dict[str, str]) -> str:
    """Stream the archive ``source`` reads into ``pg_restore`` (``argv``),
    committing only if every stored byte matches the manifest. Returns
    pg_restore's stderr tail (warnings). Raises Refused on a checksum
    mismatch or a damaged encrypted dump (nothing restored) and JobFailed
    when pg_restore fails (its transaction rolled back) — or when it had
    already committed a dump that then proved not to match (only another
    archive under the backup's name can end early: ``archive.check_stored``
    refuses that before a restore starts; the message then says the target
    was changed). pg_restore exiting 0 before the end of a dump that
    matches (entries left out of the list) is a success."""
    backup_id = source.info.id
    proc = PgProcess(argv, env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    held: bytes | None = None
    alive = True
    chunks = iter(source)
    try:
        for chunk in chunks:
            if source.size > source.info.size:
                # Holding back the last chunk only works if pg_restore needs
                # it: past the manifest's size, the chunk held is the end of
                # a whole archive, and feeding it would let pg_restore COMMIT
                # before the checksum is known. Refuse before that.
                _mismatch(source, committed=proc.proc.poll() == 0)
            if held is not None and not (alive := proc.feed(held)):
                break
            held = chunk
        if not alive:
            code = proc.wait()
            if code != 0:
                raise JobFailed(f"restore of {backup_id} failed: {proc.failure(code)}")
            # pg_restore had all it needed (entries left out of the list) and
            # COMMITTED without the rest: read it anyway, to say truly below
            # whether what was committed is the backup written.
            try:
                for _ in chunks:
                    pass
            except SafesyncError:  # damaged or unreadable after the commit: say that it committed
                _mismatch(source, committed=True)
        if not source.as_written():
            _mismatch(source, committed=proc.proc.poll() == 0)
        if held is not None and alive and not proc.feed(held):
            if (code := proc.wait()) != 0:
                raise JobFailed(f"restore of {backup_id} failed: {proc.failure(code)}")
            held = None  # finished without it: checksum verified above
        if not alive or held is None and proc.proc.poll() == 0:
            return proc.stderr_text(20)
        proc.close_stdin()
        code = proc.wait()
        if code != 0:
            # a privilege or an object that cannot be created fails the same way next time: a refusal
            raise failure(f"restore of {backup_id} failed and was rolled back", proc.stderr_text(40), proc.failure(code))
        return proc.stderr_text(20)
    finally:
        chunks.close()  # type: ignore[attr-defined]
        proc.kill()  # any exit before the final chunk: pg_restore never reaches COMMIT
