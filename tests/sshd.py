"""A real OpenSSH server on 127.0.0.1 for tests: free port, temporary keys, stopped by PID.

The server lets the current user (root included) in with one key generated here, reads
nothing from /etc/ssh, and logs to a file tests can read (``Accepted publickey`` lines
count connections).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: Where Debian and most distributions put sshd when it is not on PATH (sbin often is not).
SSHD_FALLBACKS = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
INSTALL_HINT = "install openssh-server (Debian: apt-get install openssh-server; scripts/test does)"


def find_sshd(path: str | None = None, fallbacks: tuple[str, ...] = SSHD_FALLBACKS) -> str | None:
    """The sshd binary: on ``PATH`` first, then the usual sbin folders; ``None`` if absent."""
    found = shutil.which("sshd", path=path)
    if found:
        return found
    return next((f for f in fallbacks if os.access(f, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair at ``path`` (no passphrase); returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    port: int
    user: str
    client_key: Path
    known_hosts: Path  # the server's real host key, as ssh-keyscan would record it
    host_key_line: str
    log: Path
    proc: subprocess.Popen[bytes]

    def accepted(self) -> int:
        """How many logins the server accepted so far."""
        return self.log.read_text(errors="replace").count("Accepted publickey")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def unavailable_reason(
    path: str | None = None, fallbacks: tuple[str, ...] = SSHD_FALLBACKS
) -> str | None:
    """Why the SSH tests cannot run here, in words that say what to install; None if they can.

    The SSH tests fail with this reason (never skip): a run without sshd tests nothing SSH.
    """
    if find_sshd(path, fallbacks) is None:
        where = ", ".join(["PATH", *fallbacks])
        return f"sshd not found (looked on {where}): {INSTALL_HINT}"
    if shutil.which("ssh-keygen", path=path) is None and not os.access(
        "/usr/bin/ssh-keygen", os.X_OK
    ):
        return (
            "ssh-keygen not found: install openssh-client (Debian: apt-get install openssh-client)"
        )
    if not os.path.isdir("/run/sshd"):
        if os.geteuid() != 0:
            return "sshd needs the privilege separation folder /run/sshd (create it as root)"
    return None


def start(folder: Path) -> Sshd:
    """Start ``sshd -D`` with a config in ``folder``; wait until it accepts connections."""
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    host_key = folder / "host_ed25519"
    host_pub = keygen(host_key, "wsjobs-test-host")
    client_key = folder / "client_ed25519"
    authorized = folder / "authorized_keys"
    authorized.write_text(keygen(client_key, "wsjobs-test-client") + "\n")
    port = free_port()
    log = folder / "sshd.log"
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "StrictModes no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "AllowTcpForwarding yes",
                "LogLevel INFO",
                "",
            ]
        )
    )
    binary = find_sshd()
    if binary is None:
        raise RuntimeError(unavailable_reason() or "sshd not found")
    proc = subprocess.Popen(
        [binary, "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
            raise RuntimeError(f"sshd exited with {proc.returncode}: {err} {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(4).startswith(b"SSH-"):
                    break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("sshd did not start listening within 10 s")
    key_type, key_b64 = host_pub.split()[:2]
    line = f"[127.0.0.1]:{port} {key_type} {key_b64}"
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(line + "\n")
    return Sshd(port, getpass.getuser(), client_key, known_hosts, line, log, proc)
