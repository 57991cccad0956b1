"""What every nginx config mainevent generates shares: the binary, the process preamble, temp dirs.

Debian's nginx runs as the shield (``media/edge/nginx.py``) and as the control plane's load
balancer (``control/fleet.py``), each from a private working directory (``nginx -p <workdir>``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["TEMP_DIRS", "find_nginx", "make_dirs", "preamble", "temp_paths"]

TEMP_DIRS = ("client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp")


def find_nginx() -> str | None:
    """Path of the nginx binary (Debian installs it in /usr/sbin), or None."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def preamble(workdir: Path, user: str | None) -> str:
    """Main context and events block: one worker, in the foreground, pid and log in ``workdir``."""
    return f"""{f"user {user};" if user else ""}
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;

events {{
    worker_connections 16384;
    multi_accept on;
}}
"""


def temp_paths(workdir: Path) -> str:
    """The http-block lines that keep nginx's temporary files in ``workdir``."""
    return "\n".join(f"    {d.replace('_temp', '')}_temp_path {workdir}/{d};" for d in TEMP_DIRS)


def make_dirs(workdir: Path, *extra: str) -> None:
    """Create ``workdir``'s temporary directories (and ``extra`` ones)."""
    for sub in (*extra, *TEMP_DIRS):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
