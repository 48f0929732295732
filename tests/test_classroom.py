"""Classroom mode (issue 15, the classroom server): codes and admission, one workspace per browser
session (runs listed and opened only by their owner), the fair training line (order, place, estimated
start, cancel, one job per person), per-student limits with plain messages, cleanup with an undo, and
`make run` left as it was. Headless: the line is driven with a stand-in for training (no PyTorch work),
the pages with AppTest. The real browser test is tests/test_browser_classroom.py."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.app import classroom, jobs, workspace
from tl_core.app.workspace import ClassroomError
from tl_core.config import DataConfig, RunConfig, TrainConfig
from tl_core.data.sample import sample_dir
from tl_core.runs import RunFolder, list_runs

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
CODE, TEACHER = "K7P4QX", "TEACH234"
A, B = "student-aaaa", "student-bbbb"


@pytest.fixture
def room(tmp_path, monkeypatch):
    """A classroom server's environment: its codes, a fresh workspace, no session known yet."""
    monkeypatch.setenv("TL_CLASSROOM", "1")
    monkeypatch.setenv("TL_CLASSROOM_CODE", CODE)
    monkeypatch.setenv("TL_TEACHER_CODE", TEACHER)
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "shared-runs"))
    for env, _ in classroom.LIMIT_SETTINGS.values():
        monkeypatch.delenv(env, raising=False)
    with classroom._WRONG_LOCK:
        classroom._WRONG.clear()
    yield tmp_path
    workspace.set_session_source(None)


def as_session(token: str | None) -> None:
    workspace.set_session_source(lambda: token)


def fake_run(runs: Path, run_id: str, accuracy: float = 0.9) -> RunFolder:
    run = RunFolder.create(RunConfig(data=DataConfig(root=str(sample_dir())), train=TrainConfig(epochs=1)), runs,
                           run_id=run_id)
    run.write_status("finished", "Training finished.", best_val_accuracy=accuracy, epoch=1, epochs=1)
    return run


# -- codes and admission -----------------------------------------------------------------------------

def test_classroom_codes_are_short_readable_and_from_the_environment(room, monkeypatch):
    code = classroom.new_code()
    assert len(code) == 6 and set(code) <= set(classroom.CODE_ALPHABET) and not set(code) & set("01OIL")
    assert classroom.normalise_code(" k7p-4qx ") == CODE
    launch = classroom.plan("10.1.2.3", 9000, hosts=["localhost", "10.1.2.3"])
    assert (launch.class_code, launch.teacher_code) == (CODE, TEACHER)
    assert launch.env["TL_CLASSROOM"] == "1" and launch.env["TL_CLASSROOM_CODE"] == CODE
    argv = " ".join(launch.argv)
    assert "--server.address 10.1.2.3" in argv and "--server.port 9000" in argv
    assert "--server.allowedHosts 10.1.2.3" in argv and "--server.maxUploadSize 200" in argv
    banner = launch.banner()
    assert "http://10.1.2.3:9000" in banner and CODE in banner and TEACHER in banner
    # made up when not given; the two codes never equal
    monkeypatch.delenv("TL_CLASSROOM_CODE")
    monkeypatch.delenv("TL_TEACHER_CODE")
    made = classroom.plan("10.1.2.3", 9000, hosts=["localhost"])
    assert len(made.class_code) == 6 and len(made.teacher_code) == 8 and made.class_code != made.teacher_code
    with pytest.raises(ClassroomError, match="must differ"):
        classroom.plan("10.1.2.3", 9000, env={"TL_CLASSROOM_CODE": "SAME22", "TL_TEACHER_CODE": "same-22"},
                       hosts=["localhost"])
    assert classroom.network_address()  # an address or 0.0.0.0, never an error


def test_classroom_banner_says_https_when_a_certificate_is_given(room, monkeypatch, tmp_path):
    monkeypatch.delenv("STREAMLIT_SERVER_SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("STREAMLIT_SERVER_SSL_KEY_FILE", raising=False)
    monkeypatch.setenv("STREAMLIT_SERVER_SSL_CERT_FILE", "/etc/tl-cert.pem")
    assert "http://10.1.2.3:9000" in classroom.plan("10.1.2.3", 9000, hosts=["localhost"]).banner()  # no key: http
    monkeypatch.setenv("STREAMLIT_SERVER_SSL_KEY_FILE", "/etc/tl-key.pem")
    assert "https://10.1.2.3:9000" in classroom.plan("10.1.2.3", 9000, hosts=["localhost"]).banner()
    config = tmp_path / "config.toml"
    config.write_text('[server]\nsslCertFile = "c.pem"\nsslKeyFile = "k.pem"\n')
    assert classroom.serves_https({}, config) and not classroom.serves_https({}, tmp_path / "missing.toml")


def test_classroom_admission_is_per_session_and_remembered(room):
    assert not classroom.is_admitted(A)
    with pytest.raises(ClassroomError, match="not the class code"):
        classroom.admit(A, "WRONG1")
    assert not classroom.is_admitted(A)
    classroom.admit(A, "k7p 4qx", name="  Ada\x07 Lovelace  ")
    assert classroom.is_admitted(A) and not classroom.was_teacher(A)
    assert classroom.admission(A)["name"] == "Ada Lovelace"
    assert not classroom.is_admitted(B)                      # another token is not let in by A's code
    assert not classroom.is_admitted("../" + A)              # nothing from the address reaches outside sessions/
    with pytest.raises(ClassroomError, match="teacher code"):
        classroom.become_teacher(A, CODE)
    proof = classroom.become_teacher(A, TEACHER)
    assert classroom.is_teacher(A, proof) and classroom.was_teacher(A)
    # the address alone (the token) does not open the teacher view: it shows on the projector
    assert not any(classroom.is_teacher(A, guess) for guess in (None, "", "x" * 32))
    assert not classroom.is_teacher(B, proof)                # another session cannot borrow the proof
    assert proof not in json.dumps(classroom.admission(A))   # only its hash is on disk
    second_tab = classroom.become_teacher(A, TEACHER)
    assert classroom.is_teacher(A, second_tab) and classroom.is_teacher(A, proof)   # both tabs stay open
    for _ in range(classroom.TEACHER_PROOFS_KEPT):
        classroom.become_teacher(A, TEACHER)
    assert not classroom.is_teacher(A, proof)                # the oldest tabs are forgotten
    record = classroom.admit(B, TEACHER)                     # the teacher code also opens the door
    assert classroom.is_teacher(B, record["teacher_proof"]) and "teacher_proof" not in classroom.admission(B)
    assert "teacher_proof" not in classroom.admit(A, CODE)   # the class code hands out no proof
    assert classroom.was_teacher(A) and classroom.admission(A)["name"] == "Ada Lovelace"
    # a script guessing codes has to wait
    for _ in range(classroom.WRONG_CODES_PER_MINUTE):
        with pytest.raises(ClassroomError):
            classroom.admit("guesser-1", "AAAAAA")
    with pytest.raises(ClassroomError, match="Too many wrong codes"):
        classroom.admit("guesser-1", CODE)


# -- one workspace per session ------------------------------------------------------------------------

def test_classroom_workspaces_are_separate_and_nothing_without_a_session(room):
    from tl_core.app.sessions import last_project, save_session
    from tl_core.app.state import UIState

    as_session(None)
    with pytest.raises(ClassroomError, match="class code"):
        workspace.runs_dir()
    with pytest.raises(ClassroomError):
        workspace.new_upload_dir("folder")
    classroom.admit(A, CODE)
    classroom.admit(B, CODE)
    as_session(B)
    b_run = fake_run(workspace.runs_dir(), "b-run")
    save_session(B, UIState(data_root=str(sample_dir()), run_dir=str(b_run.path)))
    as_session(A)
    mine = workspace.runs_dir()
    assert mine == room / "workspace" / "sessions" / A / "runs"
    assert workspace.new_upload_dir("zip").parent == room / "workspace" / "sessions" / A / "uploads"
    a_run = fake_run(mine, "a-run")
    assert [r["run_id"] for r in list_runs(workspace.runs_dir())] == ["a-run"]
    assert workspace.owns_run(a_run.path) and not workspace.owns_run(b_run.path)
    # by path, by a path with .. in it, by run id under the shared folder: nothing of B's
    assert not workspace.owns_run(mine / ".." / ".." / B / "runs" / "b-run")
    assert not workspace.owns_run(Path(os.environ["TL_RUNS_DIR"]) / "b-run")
    with pytest.raises(ClassroomError, match="not yours"):
        workspace.check_owns_run(b_run.path)
    assert last_project(exclude=A) is None                   # never another student's session
    assert not workspace.folder_access("127.0.0.1").enabled  # typed paths off in a classroom
    assert classroom.run_owner(b_run.path) == B and classroom.run_owner(a_run.path) == A
    # the teacher reads everyone's
    found = {s.token: [r["run_id"] for r in s.runs] for s in classroom.students()}
    assert found == {A: ["a-run"], B: ["b-run"]}


def test_classroom_off_leaves_the_laptop_as_it_was(tmp_path, monkeypatch):
    monkeypatch.delenv("TL_CLASSROOM", raising=False)
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("TL_WORKSPACE", str(tmp_path / "ws"))
    assert workspace.runs_dir() == tmp_path / "runs"
    assert workspace.owns_run(tmp_path / "anywhere" / "run")
    assert workspace.new_upload_dir().parent == tmp_path / "ws" / "uploads"
    assert classroom.limits() == classroom.Limits()          # no limits unless set
    assert workspace.folder_access("127.0.0.1").enabled
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception and "Transfer Lab" in [t.value for t in at.title]
    assert "gate_code" not in [t.key for t in at.text_input]


def test_make_run_is_unchanged_and_make_classroom_uses_the_launcher():
    run = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert "--server.address 127.0.0.1" in run and "classroom" not in run and "TL_CLASSROOM" not in run
    room = subprocess.run(["make", "-n", "classroom", "HOST=10.9.8.7", "PORT=8600"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60).stdout
    assert "-m tl_core.app.classroom" in room and "--host 10.9.8.7" in room and "--port 8600" in room
    default = subprocess.run(["make", "-n", "classroom"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "HOST"}).stdout
    assert "--host" not in default   # the launcher finds the network address


# -- the pages ------------------------------------------------------------------------------------

def _page(token: str, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["session"] = token
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "success", "info", "warning", "error", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def test_classroom_pages_ask_for_the_code_and_show_only_ones_own_runs(room, monkeypatch):
    ws = room / "workspace" / "sessions"
    b_run = fake_run(ws / B / "runs", "b-secret-run")
    classroom.admit(B, CODE)
    # without the code: the gate, whatever page the address names; no run, no choices
    for page in (None, "pages/4_Train.py", "pages/5_Results.py", "pages/8_Teacher.py"):
        at = _page(A, page)
        assert [t.key for t in at.text_input] == ["gate_code", "gate_name"], page
        assert "b-secret-run" not in _texts(at) and not at.dataframe
    at = _page(A)
    at.text_input(key="gate_code").set_value("nope").run()
    at.button(key="gate_enter").click().run()
    assert any("not the class code" in e.value for e in at.error)
    at.text_input(key="gate_code").set_value(CODE.lower())
    at.text_input(key="gate_name").set_value("Ada")
    at.button(key="gate_enter").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert classroom.admission(A)["name"] == "Ada"
    assert "gate_code" not in [t.key for t in at.text_input]
    # a refresh (a new session with the same address) is not asked again
    home = _page(A)
    assert "gate_code" not in [t.key for t in home.text_input]
    assert not [b for b in home.button if b.key == "home_continue"]   # never offers B's session
    # A remembers B's run as its own (a hand-edited state, a guessed path): the Train page ignores it
    (ws / A).mkdir(parents=True, exist_ok=True)
    (ws / A / "ui_state.json").write_text(json.dumps({"data_root": str(sample_dir()), "run_dir": str(b_run.path)}))
    a_run = fake_run(ws / A / "runs", "a-own-run")
    train = _page(A, "pages/4_Train.py")
    body = _texts(train)
    assert "b-secret-run" not in body and str(b_run.path) not in body
    # her run by its name: the server's folders mean nothing on the student's computer
    assert "Run folder: `a-own-run` (on the classroom server)" in body and str(a_run.path) not in body
    tables = [list(df.value["Run folder"]) for df in train.dataframe if "Run folder" in df.value.columns]
    assert tables == [["a-own-run"]]
    assert train.session_state["tl_ui"].run_dir == str(a_run.path)
    # the teacher page asks the teacher code, then lists both students with their runs
    teacher = _page(A, "pages/8_Teacher.py")
    assert [t.key for t in teacher.text_input] == ["teacher_code"]
    teacher.text_input(key="teacher_code").set_value(TEACHER)
    teacher.button(key="teacher_enter").click().run()
    assert not teacher.exception, [e.value for e in teacher.exception]
    students = teacher.dataframe[0].value
    assert sorted(students["Student"]) == ["Ada", f"Student {B[:4]}"]
    assert set(students["Runs"]) == {1}
    # cleanup on the teacher's click (never the teacher's own workspace), and its undo
    monkeypatch.setenv("TL_CLASSROOM_CLEANUP_DAYS", "0")   # the documented setting: the age offered
    # a reload (or a student who copied the address off the projector) is asked for the code again
    teacher = _page(A, "pages/8_Teacher.py")
    assert [t.key for t in teacher.text_input] == ["teacher_code"] and not teacher.dataframe
    assert "asked again after the page is reloaded" in _texts(teacher)
    teacher.text_input(key="teacher_code").set_value(TEACHER)
    teacher.button(key="teacher_enter").click().run()
    teacher.run()
    assert teacher.number_input(key="teacher_cleanup_days").value == 0
    teacher.button(key="teacher_cleanup").click().run()
    assert not teacher.exception and not classroom.is_admitted(B) and classroom.is_admitted(A)
    teacher.run()
    restore = [b for b in teacher.button if b.key.startswith("teacher_restore_")]
    assert len(restore) == 1
    restore[0].click().run()
    assert not teacher.exception and classroom.is_admitted(B) and (ws / B / "runs" / "b-secret-run").is_dir()


# -- the training line ------------------------------------------------------------------------------

@pytest.fixture
def line(room, monkeypatch):
    """A fresh line whose 'training' waits until the test lets it finish (no PyTorch work)."""
    registry = jobs.JobRegistry()
    monkeypatch.setattr(jobs, "REGISTRY", registry)
    monkeypatch.setattr(jobs, "_estimate_seconds", lambda config: 60.0 * config.train.epochs)
    gates: dict[str, threading.Event] = {}

    def fake_fit(config, run, callbacks, stop_event):
        run.write_status("running", "Training.", epoch=0, epochs=config.train.epochs)
        gate = gates.setdefault(run.run_id, threading.Event())
        while not (gate.is_set() or stop_event.is_set()):
            time.sleep(0.02)
        run.write_status("stopped" if stop_event.is_set() else "finished", "Done.")

    monkeypatch.setattr(jobs, "fit", fake_fit)
    for token in (A, B, "student-cccc"):
        classroom.admit(token, CODE)
    yield registry, gates
    registry.stop_all(10)


def _submit(token: str, epochs: int = 1) -> jobs.Job:
    as_session(token)
    config = RunConfig(data=DataConfig(root=str(sample_dir())), train=TrainConfig(epochs=epochs))
    return jobs.start_training(config, workspace.runs_dir())


def _wait(predicate, timeout=10.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_classroom_queue_is_first_come_first_served_with_place_and_start_time(line):
    registry, gates = line
    first = _submit(A, epochs=2)
    assert first.alive and jobs.active_job() is first
    second = _submit(B, epochs=1)
    third = _submit("student-cccc", epochs=3)
    assert second.waiting and third.waiting
    # visible on disk: a refresh or a restarted server shows them as waiting
    assert RunFolder(second.run_dir).status()["state"] == "queued"
    assert Path(second.run_dir).parent == room_runs(B)
    p2, p3 = jobs.queue_place(second.run_dir), jobs.queue_place(third.run_dir)
    assert (p2.place, p2.waiting, p3.place) == (1, 2, 2)
    assert 0 < p2.start_in_seconds <= 120            # what is left of the first (2 epochs x 60 s)
    assert p3.start_in_seconds == pytest.approx(p2.start_in_seconds + 60, abs=2)   # + the second's estimate
    # each student sees their own job, not another's
    as_session(B)
    assert jobs.own_job() is second
    as_session("student-dddd")
    assert jobs.own_job() is None
    # one job in line per student
    with pytest.raises(Exception, match="already have a training waiting in line"):
        _submit(B)
    with pytest.raises(Exception, match="already training"):
        _submit(A)
    # the first ends: the second starts by itself, then the third
    gates.setdefault(first.run.run_id, threading.Event()).set()
    assert _wait(lambda: second.alive)
    assert third.waiting and jobs.queue_place(third.run_dir).place == 1
    gates.setdefault(second.run.run_id, threading.Event()).set()
    assert _wait(lambda: third.alive)
    gates.setdefault(third.run.run_id, threading.Event()).set()
    assert _wait(lambda: not third.alive)
    assert [RunFolder(j.run_dir).state for j in (first, second, third)] == ["finished"] * 3


def room_runs(token: str) -> Path:
    return Path(os.environ["TL_WORKSPACE"]) / "sessions" / token / "runs"


def test_classroom_queue_cancel_and_a_closed_server(line):
    registry, gates = line
    first = _submit(A)
    second = _submit(B)
    third = _submit("student-cccc")
    assert jobs.stop_training(second.run_dir)           # Stop on a waiting job takes it out of line
    assert not Path(second.run_dir).exists()            # nothing was trained: its empty folder goes
    assert jobs.queue_place(third.run_dir).place == 1
    assert not jobs.cancel_waiting(first.run_dir)       # a training job is stopped, not cancelled
    again = _submit(B)                                  # after cancelling, B may ask again (at the back)
    assert jobs.queue_place(again.run_dir).place == 2
    # the Lab waits for the line too
    from tl_core.app import lab_jobs

    with pytest.raises(Exception, match="waiting in line"):
        lab_jobs.start_experiment(object())
    registry.stop_all(10)
    assert RunFolder(first.run_dir).state == "stopped"
    status = RunFolder(third.run_dir).status()
    assert status["state"] == "stopped" and "waited in line" in status["message"]


def test_classroom_queue_waits_for_a_lab_experiment(line, monkeypatch):
    from tl_core.app import lab_jobs

    registry, gates = line
    running = type("RunningExperiment", (), {"owner": B, "alive": True})()
    monkeypatch.setattr(lab_jobs.REGISTRY, "active", lambda: running)
    job = _submit(A)
    assert job.waiting and jobs.queue_place(job.run_dir).behind_lab
    as_session(A)
    assert lab_jobs.active_experiment() is None          # another student's experiment is not A's to see
    assert not lab_jobs.stop_experiment("/anything")     # nor to stop
    monkeypatch.setattr(lab_jobs.REGISTRY, "active", lambda: None)
    assert _wait(lambda: job.alive)                      # the line starts it once the experiment is over
    gates.setdefault(job.run.run_id, threading.Event()).set()


# -- limits ------------------------------------------------------------------------------------

def test_classroom_limits_are_enforced_with_plain_messages(room, line, monkeypatch):
    assert classroom.limits() == classroom.Limits(pictures=3000, upload_mb=200, epochs=30)   # classroom defaults
    monkeypatch.setenv("TL_LIMIT_EPOCHS", "3")
    monkeypatch.setenv("TL_LIMIT_PICTURES", "50")
    monkeypatch.setenv("TL_LIMIT_UPLOAD_MB", "1")
    with pytest.raises(ClassroomError, match="at most 3 epochs; you asked for 5"):
        _submit(A, epochs=5)
    with pytest.raises(ClassroomError, match="at most 50 pictures; this has 200"):
        _submit(A, epochs=2)
    assert not list(room_runs(A).glob("*"))              # refused before any run folder exists
    with pytest.raises(ClassroomError, match="at most 1 MB"):
        classroom.check_upload(3 * 1024 * 1024)
    with pytest.raises(ClassroomError, match="at most 50 pictures"):
        classroom.check_upload(1000, files=80)
    assert workspace.upload_limit_mb() == 1
    monkeypatch.setenv("TL_LIMIT_PICTURES", "off")
    assert _submit(A, epochs=2).alive


# -- cleanup ----------------------------------------------------------------------------------------

def test_classroom_cleanup_only_when_asked_and_undone(room):
    for token in (A, B):
        classroom.admit(token, CODE)
        fake_run(room_runs(token), f"{token}-run")
    old = time.time() - 10 * 86400
    for path in (room / "workspace" / "sessions" / A).rglob("*"):
        os.utime(path, (old, old))
    os.utime(room / "workspace" / "sessions" / A, (old, old))
    assert classroom.cleanup_days() == 7.0
    assert [s.token for s in classroom.old_workspaces(7)] == [A]
    assert classroom.old_workspaces(7, keep=A) == []
    moved = classroom.trash_workspaces([A])
    assert not (room / "workspace" / "sessions" / A).exists() and moved[0].is_dir()
    assert not classroom.is_admitted(A)                  # asked for the code again, starts clean
    assert [t["token"] for t in classroom.list_trashed_workspaces()] == [A]
    classroom.restore_workspace(moved[0])
    assert classroom.is_admitted(A) and (room_runs(A) / f"{A}-run" / "config.json").is_file()
    with pytest.raises(ClassroomError):
        classroom.restore_workspace(room / "workspace" / "sessions" / B)
