"""Classroom mode: one Transfer Lab server for a whole room (``make classroom``).

- **Codes.** A short class code (``TL_CLASSROOM_CODE``, else made up at start) lets a browser in; a
  separate teacher code (``TL_TEACHER_CODE``) opens the Teacher page, in the one tab where it was typed
  (a proof kept in the tab's memory, :func:`is_teacher`: the address shows on the projector). Both are
  printed by the launcher (:func:`main`), which then starts Streamlit with ``TL_CLASSROOM=1`` and the
  codes in its environment.
- **Admission.** Entering the right code is recorded per browser session (its token, the
  ``?session=`` in the address) in ``workspace/sessions/<token>/admission.json``, with the optional
  name the student gave, so a refresh does not ask again; a token never admitted reaches nothing.
- **Workspaces.** Each admitted session keeps everything in its own folder (see
  :mod:`tl_core.app.workspace`); the teacher view reads every student's runs from here
  (:func:`students`), read-only.
- **Limits** per student (:func:`limits`: pictures, upload size, epochs), enforced by the jobs and the
  uploads with plain messages.
- **Cleanup** only when the teacher asks: old workspaces move to ``workspace/sessions-trash/`` and
  can be restored (:func:`trash_workspaces`, :func:`restore_workspace`); nothing is removed silently.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tl_core.app.workspace import (CLASSROOM_ENV, SESSIONS_DIR, ClassroomError, classroom_mode, session_root,
                                   workspace_dir)
from tl_core.files import write_json_atomic

CLASS_CODE_ENV = "TL_CLASSROOM_CODE"
TEACHER_CODE_ENV = "TL_TEACHER_CODE"
ADMISSION_FILE = "admission.json"
TRASH_DIR = "sessions-trash"
# Letters and digits nobody confuses when read off a projector (no 0/O, 1/I/L).
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CLASS_CODE_LENGTH = 6
TEACHER_CODE_LENGTH = 8
NAME_MAX_CHARS = 40
TEACHER_PROOFS_KEPT = 8   # tabs (or reloads) that keep the teacher view open at once
_admission_lock = threading.Lock()   # admission.json is read, changed and written whole
# Wrong codes allowed per browser session per minute before it has to wait (a script guessing codes).
WRONG_CODES_PER_MINUTE = 8

# Per-student limits: the environment variable, what it limits, its default in classroom mode.
LIMIT_SETTINGS = {
    "pictures": ("TL_LIMIT_PICTURES", 3000),
    "upload_mb": ("TL_LIMIT_UPLOAD_MB", 200),
    "epochs": ("TL_LIMIT_EPOCHS", 30),
}
CLEANUP_DAYS_ENV = "TL_CLASSROOM_CLEANUP_DAYS"
CLEANUP_DAYS_DEFAULT = 7.0


# -- codes ---------------------------------------------------------------------------------------

def new_code(length: int = CLASS_CODE_LENGTH) -> str:
    """A fresh code that is easy to read aloud and to type: ``length`` characters of :data:`CODE_ALPHABET`."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


def normalise_code(text: object) -> str:
    """What a code typed in any letter case, with spaces or dashes, compares as."""
    return "".join(ch for ch in str(text or "").upper() if ch.isalnum())


def class_code() -> str:
    return normalise_code(os.environ.get(CLASS_CODE_ENV))


def teacher_code() -> str:
    return normalise_code(os.environ.get(TEACHER_CODE_ENV))


def _matches(typed: object, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(normalise_code(typed).encode(), expected.encode())


_WRONG: dict[str, list[float]] = {}
_WRONG_LOCK = threading.Lock()


def _count_wrong(token: str) -> None:
    now = time.time()
    with _WRONG_LOCK:
        recent = [t for t in _WRONG.get(token, []) if now - t < 60] + [now]
        _WRONG[token] = recent


def _check_not_guessing(token: str) -> None:
    now = time.time()
    with _WRONG_LOCK:
        recent = [t for t in _WRONG.get(token, []) if now - t < 60]
    if len(recent) >= WRONG_CODES_PER_MINUTE:
        raise ClassroomError("Too many wrong codes. Wait a minute, then type the code exactly as your teacher "
                             "shows it.")


# -- admission -----------------------------------------------------------------------------------

def admission(token: str) -> dict | None:
    """What was recorded when this session entered the class code, or None (never admitted)."""
    try:
        path = session_root(token) / ADMISSION_FILE
    except ClassroomError:
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) and raw.get("admitted_at") else None


def is_admitted(token: str | None) -> bool:
    return bool(token) and admission(token) is not None


def is_teacher(token: str | None, proof: str | None) -> bool:
    """The teacher view is open to this browser tab: its session typed the teacher code and the tab holds
    the proof handed out then (kept in the tab's memory, never in the address). The address alone is
    not enough: it shows on the projector, and a student could copy it."""
    if not token or not proof:
        return False
    record = admission(token) or {}
    given = _proof_hash(proof)
    return bool(record.get("teacher")) and any(hmac.compare_digest(given, str(h))
                                               for h in record.get("teacher_proofs") or [])


def was_teacher(token: str | None) -> bool:
    """This session typed the teacher code once (the Teacher page is then listed; it asks for the code
    again in a tab that does not hold the proof, such as after a reload)."""
    return bool(token) and bool((admission(token) or {}).get("teacher"))


def _proof_hash(proof: str) -> str:
    return hashlib.sha256(proof.encode("utf-8")).hexdigest()


def _with_teacher_proof(record: dict) -> tuple[dict, str]:
    """``record`` with a new teacher proof's hash (the last few kept: one per open tab), and the proof."""
    proof = secrets.token_urlsafe(24)
    proofs = [*(record.get("teacher_proofs") or []), _proof_hash(proof)][-TEACHER_PROOFS_KEPT:]
    return {**record, "teacher": True, "teacher_proofs": proofs}, proof


def clean_name(name: object) -> str:
    """A display name as the teacher sees it: one line, printable, at most :data:`NAME_MAX_CHARS`."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(name or "")).split())
    return text[:NAME_MAX_CHARS]


def admit(token: str, typed_code: object, name: object = "") -> dict:
    """Let this browser session in when ``typed_code`` is the class code (or the teacher code, which
    also opens the Teacher page: the returned record then holds ``teacher_proof`` for the tab to keep),
    remembering the optional ``name``. A wrong code is a plain :class:`ClassroomError`; so are many
    wrong codes in a minute."""
    root = session_root(token)
    _check_not_guessing(token)
    teacher = _matches(typed_code, teacher_code())
    if not (teacher or _matches(typed_code, class_code())):
        _count_wrong(token)
        if not class_code():
            raise ClassroomError("This classroom server has no class code set. Start it with `make classroom`.")
        raise ClassroomError("That is not the class code. Type the code your teacher shows (letters and digits; "
                             "capitals or not does not matter).")
    with _admission_lock:   # two tabs of one session at once: neither's proof is lost
        previous = admission(token) or {}
        record = {**previous, "admitted_at": previous.get("admitted_at") or time.time(),
                  "name": clean_name(name) or previous.get("name", ""),
                  "teacher": bool(teacher or previous.get("teacher"))}
        proof = None
        if teacher:
            record, proof = _with_teacher_proof(record)
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(root / ADMISSION_FILE, record)
    return {**record, "teacher_proof": proof} if proof else record


def become_teacher(token: str, typed_code: object) -> str:
    """Open the Teacher page for an admitted session that typed the teacher code; returns the proof that
    the tab keeps (:func:`is_teacher`)."""
    _check_not_guessing(token)
    if not is_admitted(token):
        raise ClassroomError("Enter the class code first.")
    if not _matches(typed_code, teacher_code()):
        _count_wrong(token)
        raise ClassroomError("That is not the teacher code. It is printed where `make classroom` was started.")
    with _admission_lock:
        record, proof = _with_teacher_proof(admission(token) or {})
        write_json_atomic(session_root(token) / ADMISSION_FILE, record)
    return proof


def set_name(token: str, name: object) -> None:
    with _admission_lock:
        record = admission(token)
        if record is None:
            raise ClassroomError("Enter the class code first.")
        write_json_atomic(session_root(token) / ADMISSION_FILE, {**record, "name": clean_name(name)})


# -- the students, for the teacher ---------------------------------------------------------------

@dataclass
class Student:
    token: str
    name: str
    admitted_at: float
    last_active: float
    teacher: bool
    runs: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or f"Student {self.token[:4]}"

    @property
    def best_accuracy(self) -> float | None:
        scores = [r["best_val_accuracy"] for r in self.runs if isinstance(r.get("best_val_accuracy"), (int, float))]
        return max(scores) if scores else None


def sessions_root() -> Path:
    return workspace_dir() / SESSIONS_DIR


def student_runs_dir(token: str) -> Path:
    """A student's runs folder (for the teacher view; pages use :func:`tl_core.app.workspace.runs_dir`)."""
    return session_root(token) / "runs"


def _last_active(folder: Path) -> float:
    newest = 0.0
    for path in [folder, *folder.glob("*"), *folder.glob("runs/*/status.json")]:
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            continue
    return newest


def students(with_runs: bool = True) -> list[Student]:
    """Every admitted session on this server, newest first, with its runs (list_runs rows)."""
    from tl_core.app.sessions import valid_token
    from tl_core.runs import list_runs

    found = []
    for folder in sessions_root().glob("*"):
        token = folder.name
        if not valid_token(token):
            continue
        record = admission(token)
        if record is None:
            continue
        runs = list_runs(folder / "runs") if with_runs and (folder / "runs").is_dir() else []
        found.append(Student(token=token, name=str(record.get("name") or ""),
                             admitted_at=float(record.get("admitted_at") or 0), last_active=_last_active(folder),
                             teacher=bool(record.get("teacher")), runs=runs))
    return sorted(found, key=lambda s: s.admitted_at, reverse=True)


def run_owner(run_dir: str | Path) -> str | None:
    """The session token whose runs folder holds ``run_dir`` (None: not a student's run)."""
    try:
        real = Path(run_dir).resolve()
        root = sessions_root().resolve()
    except OSError:
        return None
    if real.parent.name == "runs" and real.parent.parent.parent == root:
        return real.parent.parent.name
    return None


# -- limits --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """What one student may use; None: no limit."""

    pictures: int | None = None
    upload_mb: int | None = None
    epochs: int | None = None

    def words(self) -> str:
        parts = []
        if self.pictures:
            parts.append(f"{self.pictures:,} pictures")
        if self.upload_mb:
            parts.append(f"{self.upload_mb} MB per upload")
        if self.epochs:
            parts.append(f"{self.epochs} epochs per training")
        return ", ".join(parts)


def limits() -> Limits:
    """``TL_LIMIT_PICTURES``, ``TL_LIMIT_UPLOAD_MB``, ``TL_LIMIT_EPOCHS`` when set (0 or "off": no limit);
    unset, the classroom defaults in classroom mode and no limits on a laptop."""
    values = {}
    for key, (env, default) in LIMIT_SETTINGS.items():
        raw = os.environ.get(env, "").strip().lower()
        if raw in ("", None):
            values[key] = default if classroom_mode() else None
        elif raw in ("0", "off", "none", "no"):
            values[key] = None
        else:
            try:
                values[key] = max(1, int(float(raw)))
            except ValueError:
                values[key] = default if classroom_mode() else None
    return Limits(**values)


def check_epochs(epochs: int) -> None:
    limit = limits().epochs
    if limit and int(epochs) > limit:
        raise ClassroomError(f"On this server a training may have at most {limit} epochs; you asked for {epochs}. "
                             f"Set Epochs to {limit} or fewer (it often stops earlier by itself anyway).")


def check_picture_count(count: int) -> None:
    limit = limits().pictures
    if limit and int(count) > limit:
        raise ClassroomError(f"On this server each student may use at most {limit:,} pictures; this has {count:,}. "
                             "Use fewer pictures per category (a few dozen each is a good start).")


def check_upload(total_bytes: int, files: int | None = None) -> None:
    """Before saving an upload: its size against the per-student limit, and its file count against
    the picture limit (a folder upload: each file is at most one picture)."""
    limit = limits().upload_mb
    if limit and total_bytes > limit * 1024 * 1024:
        raise ClassroomError(f"This upload is {total_bytes / 1024 / 1024:,.0f} MB; on this server each upload may be "
                             f"at most {limit} MB. Upload fewer or smaller pictures.")
    if files is not None:
        check_picture_count(files)


def check_unpacked(root: str | Path) -> None:
    """After unpacking a zip: its pictures against the per-student limit; over it, the unpacked
    folder goes (it was just made from the upload) and the message says why."""
    limit = limits().pictures
    if not limit:
        return
    count = count_pictures(root)
    if count > limit:
        shutil.rmtree(root, ignore_errors=True)
        check_picture_count(count)


def count_pictures(root: str | Path) -> int:
    """Pictures a data folder holds (what training would read), without opening any."""
    from tl_core.data.scan import IMAGE_EXTENSIONS

    n = 0
    for _dirpath, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        n += sum(1 for name in names if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS)
    return n


def check_config(config) -> None:
    """A training's settings against the limits (epochs, pictures in its data folder): plain words."""
    lim = limits()
    if lim.epochs:
        check_epochs(config.train.epochs)
    if lim.pictures and config.data is not None and Path(config.data.root).is_dir():
        check_picture_count(count_pictures(config.data.root))


# -- cleanup, only when the teacher asks ---------------------------------------------------------

def cleanup_days() -> float:
    """How old (days since last used) a workspace must be before the Teacher page offers to clean it up:
    ``TL_CLASSROOM_CLEANUP_DAYS``, 7 by default."""
    try:
        return max(0.0, float(os.environ.get(CLEANUP_DAYS_ENV, "") or CLEANUP_DAYS_DEFAULT))
    except ValueError:
        return CLEANUP_DAYS_DEFAULT


def old_workspaces(days: float, now: float | None = None, keep: str | None = None) -> list[Student]:
    """Students' workspaces not used for ``days`` days (never ``keep``, the teacher's own, nor one that
    trains or waits in line)."""
    from tl_core.runs import ACTIVE_STATES

    now = time.time() if now is None else now
    return [s for s in students() if s.token != keep and now - s.last_active >= days * 86400
            and not any(r.get("state") in ACTIVE_STATES for r in s.runs)]


def trash_root() -> Path:
    return workspace_dir() / TRASH_DIR


def trash_workspaces(tokens: list[str]) -> list[Path]:
    """Move these sessions' workspaces to ``workspace/sessions-trash/`` (restorable with
    :func:`restore_workspace`); the session must enter the class code again and starts clean."""
    moved = []
    trash = trash_root()
    trash.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for token in tokens:
        src = session_root(token)
        if not src.is_dir():
            continue
        dest = trash / f"{stamp}--{token}"
        n = 1
        while dest.exists():
            n += 1
            dest = trash / f"{stamp}-{n}--{token}"
        os.replace(src, dest)
        moved.append(dest)
    return moved


def list_trashed_workspaces() -> list[dict]:
    out = []
    for path in sorted(trash_root().glob("*--*"), reverse=True):
        token = path.name.split("--", 1)[1]
        record = {}
        try:
            record = json.loads((path / ADMISSION_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        out.append({"path": str(path), "token": token, "name": str(record.get("name") or ""),
                    "trashed_at": path.stat().st_mtime})
    return out


def restore_workspace(trash_path: str | Path) -> Path:
    """Put a trashed workspace back where it was (refused when that session has started a new one)."""
    path = Path(trash_path)
    if path.parent.resolve() != trash_root().resolve() or "--" not in path.name or not path.is_dir():
        raise ClassroomError("That is not a workspace in the classroom's trash.")
    dest = session_root(path.name.split("--", 1)[1])
    if dest.exists():
        raise ClassroomError("That student has started again since; their new workspace stays. The old one is "
                             f"still in {trash_root()}.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return dest


# -- the launcher: `make classroom` --------------------------------------------------------------

def network_address() -> str:
    """This machine's address on the room's network: the interface a route out would use, else the
    first of ``hostname -I``, else 0.0.0.0 (every interface). Sends nothing."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
            if address and not address.startswith("127."):
                return address
    except OSError:
        pass
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
        for address in out:
            if ":" not in address and not address.startswith("127."):
                return address
    except (OSError, subprocess.SubprocessError):
        pass
    return "0.0.0.0"


def allowed_hosts(host: str) -> list[str]:
    """The names a browser may reach the app by (the Host header): this computer's, the address it
    listens on, the machine's name and addresses (the same list as `make run HOST=...`)."""
    names = ["localhost", "127.0.0.1", "::1"]
    extra = [host] if host not in ("0.0.0.0", "::") else []
    try:
        extra.append(socket.gethostname())
    except OSError:
        pass
    try:
        extra += subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        pass
    for name in extra:
        if name and name not in names:
            names.append(name)
    return names


@dataclass
class Launch:
    host: str
    port: int
    class_code: str
    teacher_code: str
    argv: list[str]
    env: dict

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::") else socket.gethostname()
        return f"{'https' if serves_https(self.env) else 'http'}://{host}:{self.port}"

    def banner(self) -> str:
        lim = limits_in(self.env)
        return "\n".join([
            "", "Transfer Lab classroom", "",
            f"  Students open:   {self.url}",
            f"  Class code:      {self.class_code}",
            f"  Teacher code:    {self.teacher_code}   (keep it to yourself: it opens the Teacher page)",
            f"  Limits:          {lim.words() or 'none'} per student",
            "", "Stop with Ctrl-C. Each student's work stays in the workspace folder.", ""])


def serves_https(env: dict, config: Path | None = None) -> bool:
    """Whether Streamlit will serve https: a certificate and its key given through the environment
    (``STREAMLIT_SERVER_SSL_CERT_FILE`` / ``..._KEY_FILE``) or ``.streamlit/config.toml``'s
    ``server.sslCertFile`` / ``sslKeyFile`` (the camera needs https on a classroom network)."""
    if env.get("STREAMLIT_SERVER_SSL_CERT_FILE") and env.get("STREAMLIT_SERVER_SSL_KEY_FILE"):
        return True
    path = config or Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml"
    try:
        import tomllib

        with open(path, "rb") as fh:
            server = tomllib.load(fh).get("server", {})
        return bool(server.get("sslCertFile") and server.get("sslKeyFile"))
    except (OSError, ValueError):
        return False


def limits_in(env: dict) -> Limits:
    saved = {k: os.environ.get(k) for k in (CLASSROOM_ENV, *(e for e, _ in LIMIT_SETTINGS.values()))}
    try:
        for k in saved:
            if env.get(k) is not None:
                os.environ[k] = env[k]
        return limits()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def plan(host: str | None = None, port: int = 8501, env: dict | None = None,
         hosts: list[str] | None = None) -> Launch:
    """What `make classroom` runs: the address, the codes (from the environment or made up now) and
    the Streamlit command line with its environment."""
    env = dict(os.environ if env is None else env)
    host = host or network_address()
    code = normalise_code(env.get(CLASS_CODE_ENV)) or new_code(CLASS_CODE_LENGTH)
    teacher = normalise_code(env.get(TEACHER_CODE_ENV)) or new_code(TEACHER_CODE_LENGTH)
    if teacher == code:
        raise ClassroomError("The teacher code must differ from the class code.")
    env.update({CLASSROOM_ENV: "1", CLASS_CODE_ENV: code, TEACHER_CODE_ENV: teacher})
    env.setdefault("MALLOC_ARENA_MAX", "1")   # as `make run`: see the Makefile
    upload_mb = limits_in(env).upload_mb
    app = Path(__file__).resolve().parents[2] / "app.py"
    argv = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", host, "--server.port", str(port),
            "--browser.serverAddress", host if host not in ("0.0.0.0", "::") else socket.gethostname()]
    if upload_mb:
        argv += ["--server.maxUploadSize", str(upload_mb)]
    for name in hosts or allowed_hosts(host):
        argv += ["--server.allowedHosts", name]
    return Launch(host, int(port), code, teacher, argv, env)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make classroom", description="Start Transfer Lab for a classroom.")
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: this machine's network address)")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--allowed-hosts", default=None,
                        help="names a browser may use to reach the app, separated by spaces")
    args = parser.parse_args(argv)
    try:
        launch = plan(args.host, args.port, hosts=args.allowed_hosts.split() if args.allowed_hosts else None)
    except ClassroomError as err:
        print(str(err), file=sys.stderr)
        raise SystemExit(2) from None
    print(launch.banner(), flush=True)
    os.chdir(Path(__file__).resolve().parents[2])   # .streamlit/config.toml is read from here
    os.execve(launch.argv[0], launch.argv, launch.env)


if __name__ == "__main__":
    main()
