"""A real IMAP server for the mail intake's tests: Debian's dovecot (``dovecot-imapd``,
listed in ``ops/system-packages.txt``), started by the test session with its own
configuration, mail store and run directory in a temporary folder, on a free port,
and stopped at the end (no system service, nothing left outside the folder).

Run as an ordinary user, every dovecot process is that user.  Run as root (a container),
dovecot refuses to serve logins or mail as root: the login processes then run as the
package's ``dovenull`` user and the mail store belongs to its ``dovecot`` user.

Also here: ``HoldingProxy`` (a TCP relay that stalls a connection when the client sends a
chosen command: the window in which a poller is killed), messages built by hand (a
100 MB attachment is never held as an ``EmailMessage``), and small IMAP helpers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email
import email.policy
import imaplib
import os
import pwd
import grp
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ops.dev.stack import free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


@dataclass
class Dovecot:
    """``root``: a fresh folder of its own (made here; removed by ``stop``), readable by
    the mail user: pytest's temporary folders are private to the user running the tests."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tagus-dovecot-")))
    port: int = field(default_factory=free_port)
    users: dict[str, str] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    def start(self) -> Dovecot:
        if not Path(DOVECOT).exists():
            raise RuntimeError("dovecot is not installed: ops/test.sh installs what "
                               "ops/system-packages.txt lists (apt-get install dovecot-imapd)")
        for d in ("run", "state", "mail"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self.root.chmod(0o755)
            login_user = "dovenull"
            mail = pwd.getpwnam("dovecot")
            internal_user, internal_group = "dovecot", grp.getgrgid(mail.pw_gid).gr_name
            os.chown(self.root / "mail", mail.pw_uid, mail.pw_gid)
        else:
            mail = pwd.getpwuid(os.getuid())
            login_user = internal_user = mail.pw_name
            internal_group = grp.getgrgid(os.getgid()).gr_name
        self._cert()
        (self.root / "passwd").write_text("")
        self.conf.write_text(f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
ssl = yes
ssl_cert = <{self.root}/cert.pem
ssl_key = <{self.root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {mail.pw_uid}
last_valid_uid = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail.pw_uid} gid={mail.pw_gid} home={self.root}/mail/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
""")
        with open(self.root / "start.log", "wb") as out:  # a pipe would stay open: it forks
            started = subprocess.run([DOVECOT, "-c", str(self.conf)], stdout=out,
                                     stderr=subprocess.STDOUT, timeout=30)
        if started.returncode != 0:
            raise RuntimeError(f"dovecot did not start: "
                               f"{(self.root / 'start.log').read_text()[-2000:]}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1) as s:
                if s.recv(100).startswith(b"* OK"):
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer on {self.port}: {self.log()}")

    def _cert(self) -> None:
        """A self-signed certificate for 127.0.0.1 (STARTTLS; the poller trusts it
        through TAGUS_MAIL_CA_FILE)."""
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(self.root / "key.pem"), "-out", str(self.root / "cert.pem")],
            check=True, capture_output=True, timeout=60)

    @property
    def cert(self) -> Path:
        return self.root / "cert.pem"

    def stop(self) -> None:
        """Stop dovecot (SIGKILL after 10 s) and remove its folder (the mail store)."""
        try:
            pidfile = self.root / "run" / "master.pid"
            pid = int(pidfile.read_text()) if pidfile.exists() else None
            subprocess.run([DOVECOT, "-c", str(self.conf), "stop"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
            deadline = time.monotonic() + 10
            while pid is not None and time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    pid = None
                    break
                time.sleep(0.05)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text()[-3000:] if path.exists() else "(no log)"

    def add_user(self, user: str, password: str) -> None:
        """Add a login and wait until dovecot takes it: it re-reads the passwd file when
        its mtime changes, checking at most once a second, so a login in the second of
        the write can still see the old file."""
        self.users[user] = password
        path = self.root / "passwd"
        fresh = path.with_suffix(".new")
        fresh.write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        fresh.replace(path)  # never a half-written file
        deadline = time.monotonic() + 20
        while True:
            imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
            try:
                imap.login(user, password)
                imap.logout()
                return
            except imaplib.IMAP4.error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot does not accept {user!r}: {self.log()}")
                time.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    imap.shutdown()

    @contextlib.contextmanager
    def client(self, user: str):
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=60)
        try:
            imap.login(user, self.users[user])
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def deliver(self, user: str, message: bytes, folder: str = "INBOX") -> None:
        """APPEND ``message`` (CRLF line ends already) as one non-synchronising literal:
        imaplib's ``append`` rewrites every line end with a regular expression first,
        which costs seconds on a 100 MB message."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=120) as s:
            answers = s.makefile("rb")
            answers.readline()  # the greeting

            def command(tag: bytes, line: bytes, literal: bytes = b"") -> None:
                s.sendall(tag + b" " + line + b"\r\n" + literal)
                while not (answer := answers.readline()).startswith(tag + b" "):
                    if not answer:
                        raise ConnectionError("dovecot closed the connection")
                assert answer.startswith(tag + b" OK"), answer

            command(b"a", f'LOGIN "{user}" "{self.users[user]}"'.encode())
            command(b"b", f'APPEND "{folder}" {{{len(message)}+}}'.encode(), message + b"\r\n")
            command(b"c", b"LOGOUT")

    def flagged(self, user: str, keyword: str, folder: str = "INBOX") -> tuple[int, int]:
        """(messages with ``keyword``, messages) in ``folder``."""
        with self.client(user) as imap:
            imap.select(folder, readonly=True)
            have = imap.uid("SEARCH", None, "KEYWORD", keyword)[1][0].split()
            every = imap.uid("SEARCH", None, "ALL")[1][0].split()
        return len(have), len(every)


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class Attachment:
    filename: str
    body: bytes
    mime_type: str = "application/octet-stream"
    encoding: str = "base64"  # or quoted-printable


def message(*, sender: str, to: str, subject: str, message_id: str,
            date: str = "Tue, 01 Jan 2019 06:00:00 +0100", text: str = "Daily report.",
            attachments: tuple[Attachment, ...] = ()) -> bytes:
    """A multipart/mixed message (CRLF; attachments in base64 with 76-character lines,
    or quoted-printable)."""
    boundary = f"=_tagus_{abs(hash(message_id)):x}"
    head = (f"From: Utility SCADA <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n")
    out = [head.encode(), f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
           f"Content-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n".encode()]
    for a in attachments:
        out.append(f"--{boundary}\r\nContent-Type: {a.mime_type}; name=\"{a.filename}\"\r\n"
                   f"Content-Transfer-Encoding: {a.encoding}\r\nContent-Disposition: "
                   f"attachment; filename=\"{a.filename}\"\r\n\r\n".encode())
        if a.encoding == "quoted-printable":
            out.append(binascii.b2a_qp(a.body) + b"\r\n")
        else:
            out.append(base64.encodebytes(a.body).replace(b"\n", b"\r\n"))
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


# ---------------------------------------------------------------- an SMTP sink


class SmtpSink:
    """An SMTP server (aiosmtpd in its own thread) keeping every message it accepted."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.EmailMessage] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.SMTP))
        return "250 Message accepted"

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


# ---------------------------------------------------------------- a holding relay


class HoldingProxy:
    """Relays TCP to ``port``; once armed with ``hold(pattern)``, a connection whose
    client sends ``pattern`` is stalled there (nothing forwarded) and ``held`` is set."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self.pattern: bytes | None = None
        self.held = threading.Event()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def hold(self, pattern: bytes | None) -> None:
        self.pattern = pattern
        self.held.clear()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))
        stalled = False
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is client:
                        if self.pattern is not None and self.pattern in data:
                            stalled = True
                            self.held.set()
                        if not stalled:
                            upstream.sendall(data)
                    elif not stalled:
                        client.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
