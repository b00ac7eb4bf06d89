"""PostgreSQL client programs: handing them credentials without putting
the password on a command line, and making sure they die with us.

A child that outlived a killed safesync process could still COMMIT a clone
nobody is watching; ``PR_SET_PDEATHSIG`` makes the kernel kill it instead, so
the server sees the connection drop and rolls the transaction back.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_PR_SET_PDEATHSIG = 1
# What a client program may need from our environment — none of our secrets.
_KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "PGSERVICEFILE", "PGSYSCONFDIR")
_KEEP_PREFIXES = ("PGSSL", "PGGSS", "PGKRB", "PGCONNECT_TIMEOUT", "PGTARGETSESSIONATTRS", "PGPASSFILE")


def libpq_args(url: str, application_name: str) -> tuple[str, dict[str, str]]:
    """A conninfo string without the password, and a minimal environment
    carrying it: ``ps`` never shows the secret, the child gets no other."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    params["application_name"] = application_name
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith(_KEEP_PREFIXES)}
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: str(v) for k, v in params.items()}), env


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the missing COMMIT still protects us
        pass


def spawn(argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """Start a client program that is killed if this process dies."""
    return subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent, **kwargs)
