"""A whole project as one file (tl_core.projects): a real round trip to "another computer" with the
same predictions, the train/val layout kept, hostile and damaged files refused leaving nothing
behind, and the `tl project save|open` contract."""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

import tl_core
from tl_core import DataConfig, FreezeConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.cli import main
from tl_core.data.sample import write_fashion_mnist
from tl_core.data.scan import scan_folder
from tl_core.errors import ConfigError, ExportError, RunError, UploadError
from tl_core.projects import FORMAT_VERSION, MANIFEST_FILE, read_manifest, runs_of_data
from tl_core.runs import RunFolder


def tiny_config(root: Path) -> RunConfig:
    return RunConfig(data=DataConfig(root=str(root), val_fraction=0.25),
                     model=ModelConfig("tf_efficientnet_lite0", weights="offline", image_size=32),
                     freeze=FreezeConfig("head"), train=TrainConfig(epochs=1, batch_size=16, seed=1))


@pytest.fixture(scope="module")
def trained(fmnist_small, tmp_path_factory):
    """A data folder of real pictures and a finished run trained on it (both movable)."""
    base = tmp_path_factory.mktemp("project-src")
    data = base / "photos"
    shutil.copytree(fmnist_small, data)
    result = tl_core.train(tiny_config(data), runs_dir=base / "runs")
    assert result.status == "finished", result.message
    RunFolder(Path(result.run_dir)).rename("first try")
    return base, data, Path(result.run_dir)


@pytest.fixture
def data_only(fmnist_small, tmp_path) -> Path:
    """A small project file with pictures only: what the bad-input tests tamper with."""
    data = tmp_path / "pics"
    for label in ("bag", "trouser"):
        (data / label).mkdir(parents=True)
        for p in sorted((fmnist_small / label).iterdir())[:4]:
            shutil.copy(p, data / label / p.name)
    return tl_core.save_project(tmp_path / "pics", data)


def entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def rewrite(src: Path, dst: Path, change=None, add=()) -> Path:
    """A copy of the zip with some members replaced (None: removed) and raw entries added."""
    change = change or {}
    with zipfile.ZipFile(dst, "w") as out:
        for name, data in entries(src).items():
            if name in change:
                if change[name] is None:
                    continue
                data = change[name]
            out.writestr(name, data)
        for name, data in add:
            out.writestr(zipfile.ZipInfo(name) if isinstance(name, str) else name, data)
    return dst


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# -- the round trip ------------------------------------------------------------------------------

def test_round_trip_on_another_computer_gives_the_same_predictions(trained, tmp_path):
    base, data, run_dir = trained
    pictures = [p for label in ("bag", "trouser", "sneaker") for p in sorted((data / label).iterdir())[:2]]
    rel = [p.relative_to(data) for p in pictures]
    before = list(tl_core.predict(run_dir, pictures, top_k=4))
    accuracy = tl_core.evaluate(run_dir).accuracy
    choices = {"data_root": str(data), "run_dir": str(run_dir), "model_name": "tf_efficientnet_lite0",
               "train": {"epochs": 1}}
    from tl_core.results.mistakes import find_label_issues, label_issues_ready, load_label_issues

    issues = find_label_issues(run_dir)   # label_issues.json: made once, a pass over the pictures
    calls = []
    out = tl_core.save_project(tmp_path / "pets", data, [run_dir], choices,
                               progress=lambda done, total: calls.append((done, total)))
    assert out == tmp_path / "pets.tlproj" and out.is_file()
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    assert [d for d, _t in calls] == sorted(d for d, _t in calls)

    manifest = read_manifest(out)
    # format 2: label_issues.json travels, and an older Transfer Lab would not re-point its paths
    assert manifest["format_version"] == FORMAT_VERSION == 2 and manifest["transfer_lab_version"] == tl_core.__version__
    assert manifest["data"]["set_aside"] == 0 and manifest["data"]["fixes"] is False
    assert manifest["data"]["name"] == "photos" and manifest["data"]["images"] == 60
    assert [r["id"] for r in manifest["runs"]] == [run_dir.name] and manifest["choices"] is True
    run_files = set(manifest["runs"][0]["files"])
    assert {"config.json", "status.json", "metrics.jsonl", "model.safetensors", "labels.json",
            "preprocessing.json", "summary.json", "user.json", "eval_val.json",
            "novelty.json", "novelty.safetensors", "label_issues.json"} <= run_files
    names = set(entries(out))
    assert names == set(manifest["members"]) | {MANIFEST_FILE}
    assert all(len(m["sha256"]) == 64 and m["size"] > 0 for m in manifest["members"].values())

    # "another computer": the original pictures and runs are gone from where they were
    moved = base.parent / f"{base.name}-gone"
    base.rename(moved)
    try:
        dest = tmp_path / "elsewhere"
        opened = tl_core.open_project(out, dest)
        # the pictures keep their folder's name, so run lists still say which pictures a run learned from
        assert opened.folder == dest / "pets" and opened.data_root == dest / "pets" / "photos"
        new_run = opened.run_dirs[0]
        assert new_run == opened.folder / "runs" / run_dir.name
        assert RunFolder(new_run).config().data.root == str(opened.data_root)
        summary = json.loads((new_run / "summary.json").read_text())
        assert summary["val_records"] and all(Path(r["path"]).is_file() and
                                              Path(r["path"]).is_relative_to(opened.data_root)
                                              for r in summary["val_records"])
        assert opened.choices == {**choices, "data_root": str(opened.data_root), "run_dir": str(new_run)}
        assert json.loads((opened.folder / "choices.json").read_text()) == opened.choices
        assert RunFolder(new_run).user()["title"] == "first try"
        # the likely label mistakes come along, ready, pointing at the opened pictures
        opened_issues = load_label_issues(new_run)
        assert label_issues_ready(new_run) and len(opened_issues.issues) == len(issues.issues)
        assert all(Path(i.path).is_relative_to(opened.data_root) and Path(i.path).is_file()
                   for i in opened_issues.issues)
        assert tl_core.list_runs(opened.folder / "runs")[0]["state"] == "finished"

        after = list(tl_core.predict(new_run, [opened.data_root / r for r in rel], top_k=4))
        for a, b in zip(after, before):
            assert a["label"] == b["label"]
            assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
            for ta, tb in zip(a["top"], b["top"]):
                assert abs(ta["probability"] - tb["probability"]) < 1e-5
        report = tl_core.evaluate(new_run)
        assert report.n == len(summary["val_records"]) and abs(report.accuracy - accuracy) < 1e-9
        assert not (dest / ".pets").exists() and sorted(os.listdir(dest)) == ["pets"]
    finally:
        moved.rename(base)


def test_train_val_layout_is_kept(tmp_path):
    data = tmp_path / "split"
    write_fashion_mnist(data / "train", per_class=4, classes=[1, 7])
    write_fashion_mnist(data / "val", per_class=2, classes=[1, 7], offset=10)
    before = scan_folder(data)
    assert before.layout == "train_val"
    (data / "notes.txt").write_text("not a picture")
    out = tl_core.save_project(tmp_path / "split.tlproj", data)
    opened = tl_core.open_project(out, tmp_path / "open")
    after = scan_folder(opened.data_root)
    assert after.layout == "train_val"
    assert [(r.rel_path, r.label, r.split) for r in after.records] == \
           [(r.rel_path, r.label, r.split) for r in before.records]
    assert all((opened.data_root / r.rel_path).read_bytes() == (data / r.rel_path).read_bytes() for r in before.records)
    assert not (opened.data_root / "notes.txt").exists()  # only pictures the scanner accepts
    assert opened.run_dirs == [] and opened.choices is None
    assert read_manifest(out)["format_version"] == 1   # nothing of format 2 in it: older versions open it


def test_set_aside_pictures_and_the_fix_log_travel_and_undo_still_works(data_only, tmp_path):
    """The user's decisions on the Data page (a picture set aside, one moved) are theirs: they travel
    beside the pictures and undo works in the opened copy, set-aside picture included."""
    from tl_core.data import fixes

    data = tmp_path / "pics"
    aside_pic, moved_pic = sorted((data / "bag").iterdir())[:2]
    aside_bytes = aside_pic.read_bytes()
    fixes.set_aside(data, aside_pic)
    fixes.move_picture(data, moved_pic, "trouser")
    out = tl_core.save_project(tmp_path / "decisions", data)
    manifest = read_manifest(out)
    assert manifest["format_version"] == FORMAT_VERSION == 2
    assert manifest["data"]["set_aside"] == 1 and manifest["data"]["fixes"] is True
    assert manifest["data"]["images"] == 7 and f"set-aside/bag/{aside_pic.name}" in manifest["members"]

    opened = tl_core.open_project(out, tmp_path / "elsewhere")
    root = opened.data_root
    assert (fixes.set_aside_dir(root) / "bag" / aside_pic.name).read_bytes() == aside_bytes
    assert not (root / "bag" / aside_pic.name).exists() and (root / "trouser" / moved_pic.name).is_file()
    assert [f.action for f in fixes.list_fixes(root)] == ["set_aside", "move"]
    assert opened.to_dict()["set_aside"] == 1
    fixes.undo(root)   # the move
    fixes.undo(root)   # the set-aside: back from beside the opened folder
    assert (root / "bag" / moved_pic.name).is_file() and (root / "bag" / aside_pic.name).read_bytes() == aside_bytes
    assert fixes.list_fixes(root) == []
    # the original folder is untouched by all this
    assert (fixes.set_aside_dir(data) / "bag" / aside_pic.name).is_file()

    # a picture may have been set aside because it should not be shared: it can stay home
    private = tl_core.save_project(tmp_path / "without-them", data, set_aside=False)
    assert read_manifest(private)["data"]["set_aside"] == 0
    assert not [n for n in entries(private) if n.startswith("set-aside/")]
    assert aside_bytes not in entries(private).values()


@pytest.mark.parametrize("bad", [{"source": "/home/someone/.config/autostart/x.desktop"},
                                 {"target": "../../elsewhere.png"},
                                 {"action": "move", "created_folder": "/tmp/made"}])
def test_a_fix_log_naming_places_outside_the_pictures_is_refused(bad, data_only, tmp_path):
    """Undo follows the log: a changed project whose log names a place outside its pictures would let
    one click move a file from, or to, anywhere on this computer. Refused before anything is unpacked."""
    import hashlib

    from tl_core.data import fixes

    data = tmp_path / "pics"
    fixes.set_aside(data, sorted((data / "bag").iterdir())[0])
    out = tl_core.save_project(tmp_path / "with-log", data)
    members = entries(out)
    line = {**json.loads(members["fixes.jsonl"].splitlines()[0]), **bad}
    log = (json.dumps(line) + "\n").encode()
    manifest = json.loads(members[MANIFEST_FILE])
    manifest["members"]["fixes.jsonl"] = {"size": len(log), "sha256": hashlib.sha256(log).hexdigest()}
    hostile = rewrite(out, tmp_path / "hostile.tlproj",
                      change={"fixes.jsonl": log, MANIFEST_FILE: json.dumps(manifest).encode()})
    refused(hostile, tmp_path / "dest", "names a place outside its pictures")


def test_a_fix_log_line_edited_to_point_elsewhere_is_ignored_at_home(tmp_path):
    """The same rule where the log lives beside the data folder: such a line is neither listed nor undone."""
    from tl_core.data import fixes

    data = tmp_path / "pics"
    write_fashion_mnist(data, per_class=3, classes=[1, 7])
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("the user's own file")
    picture = sorted((data / "trouser").iterdir())[0]
    fixes.fixes_log_path(data).write_text(json.dumps(
        {"id": "x1", "action": "move", "source": str(elsewhere), "target": f"trouser/{picture.name}",
         "from_category": "bag", "to_category": "trouser", "at": 1.0}) + "\n")
    assert fixes.list_fixes(data) == []
    with pytest.raises(fixes.FixError, match="no fix to undo"):
        fixes.undo(data)
    assert picture.is_file() and elsewhere.read_text() == "the user's own file"


def test_a_file_naming_set_aside_members_elsewhere_is_refused(data_only, tmp_path):
    manifest = json.loads(entries(data_only)[MANIFEST_FILE])
    manifest["members"]["set-aside/x.jpg"] = {"size": 1, "sha256": "0" * 64}   # not under a category
    odd = rewrite(data_only, tmp_path / "odd.tlproj", change={MANIFEST_FILE: json.dumps(manifest).encode()})
    refused(odd, tmp_path / "dest", "never holds")


def test_existing_destination_gets_a_new_name_and_nothing_is_overwritten(data_only, tmp_path):
    dest = tmp_path / "dest"
    (dest / "pics").mkdir(parents=True)
    (dest / "pics" / "mine.txt").write_text("the user's own file")
    first = tl_core.open_project(data_only, dest)
    second = tl_core.open_project(data_only, dest)
    assert (first.folder.name, second.folder.name) == ("pics-2", "pics-3")
    assert listing(dest / "pics") == ["mine.txt"] and (dest / "pics" / "mine.txt").read_text() == "the user's own file"
    assert listing(first.folder) == listing(second.folder)


# -- bad files: refused in plain words, nothing left behind -----------------------------------

def refused(path: Path, dest: Path, match: str) -> UploadError:
    dest.mkdir(exist_ok=True)
    before = listing(dest.parent)
    with pytest.raises(UploadError, match=match) as info:
        tl_core.open_project(path, dest)
    assert listing(dest.parent) == before, "a refused project must leave nothing behind"
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)
    return info.value


def test_a_random_file_is_not_a_project(tmp_path):
    junk = tmp_path / "holiday.tlproj"
    junk.write_bytes(os.urandom(5000))
    refused(junk, tmp_path / "dest", "not a Transfer Lab project file")
    pictures = tmp_path / "pictures.zip"  # a zip, but of pictures: not a project either
    with zipfile.ZipFile(pictures, "w") as zf:
        zf.writestr("cats/1.png", b"x")
    refused(pictures, tmp_path / "dest", "not a Transfer Lab project")
    with pytest.raises(UploadError, match="not found"):
        tl_core.open_project(tmp_path / "missing.tlproj", tmp_path / "dest")


def test_path_traversal_and_links_are_refused(data_only, tmp_path):
    evil = rewrite(data_only, tmp_path / "evil.tlproj", add=[("../evil", b"owned")])
    refused(evil, tmp_path / "dest", "points outside")
    assert not (tmp_path / "evil").exists()
    absolute = rewrite(data_only, tmp_path / "abs.tlproj", add=[("/tmp/tl-absolute-evil", b"owned")])
    refused(absolute, tmp_path / "dest", "points outside")
    assert not Path("/tmp/tl-absolute-evil").exists()
    link = zipfile.ZipInfo("data/bag/link.png")
    link.external_attr = (0o120777) << 16
    linked = rewrite(data_only, tmp_path / "link.tlproj", add=[(link, b"/etc/passwd")])
    refused(linked, tmp_path / "dest", "is a link")
    nested = rewrite(data_only, tmp_path / "nested.tlproj", add=[("data/bag/more.zip", b"PK")])
    refused(nested, tmp_path / "dest", "archive inside")


def test_a_tampered_member_fails_its_checksum(data_only, tmp_path):
    name = next(n for n in entries(data_only) if n.startswith("data/bag/"))
    tampered = rewrite(data_only, tmp_path / "tampered.tlproj", change={name: b"not the saved picture"})
    err = refused(tampered, tmp_path / "dest", "checksum")
    assert name in str(err)
    extra = rewrite(data_only, tmp_path / "extra.tlproj", add=[("data/bag/extra.png", b"unlisted")])
    refused(extra, tmp_path / "dest", "does not name")
    missing = rewrite(data_only, tmp_path / "missing.tlproj", change={name: None})
    refused(missing, tmp_path / "dest", "is missing")


def test_truncated_and_corrupted_files_are_damaged(data_only, tmp_path):
    raw = data_only.read_bytes()
    for i, cut in enumerate((len(raw) // 2, len(raw) - 10)):
        short = tmp_path / f"short{i}.tlproj"
        short.write_bytes(raw[:cut])
        err = refused(short, tmp_path / "dest", "damaged or incomplete")
        assert "upload" not in str(err).lower()
    # a flipped byte inside a stored picture: the zip's own check (CRC) catches it while unpacking
    name = next(n for n in entries(data_only) if n.endswith(".png"))
    with zipfile.ZipFile(data_only) as zf:
        info = zf.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    flipped = bytearray(raw)
    flipped[start + info.compress_size // 2] ^= 0xFF
    bad = tmp_path / "flipped.tlproj"
    bad.write_bytes(bytes(flipped))
    err = refused(bad, tmp_path / "dest", "project file is damaged")
    assert "upload" not in str(err).lower()


def test_a_newer_format_asks_for_an_update(data_only, tmp_path):
    manifest = json.loads(entries(data_only)[MANIFEST_FILE])
    manifest.update(format_version=FORMAT_VERSION + 1, transfer_lab_version="9.0.0")
    newer = rewrite(data_only, tmp_path / "newer.tlproj", change={MANIFEST_FILE: json.dumps(manifest).encode()})
    refused(newer, tmp_path / "dest", "newer Transfer Lab .*Update Transfer Lab")
    with pytest.raises(UploadError, match="newer"):
        read_manifest(newer)
    manifest.update(format_version=FORMAT_VERSION, members={"../../etc/passwd": {"size": 1, "sha256": "0" * 64}})
    hostile = rewrite(data_only, tmp_path / "hostile.tlproj", change={MANIFEST_FILE: json.dumps(manifest).encode()})
    refused(hostile, tmp_path / "dest", "never holds")


def test_a_full_disk_is_said_plainly(data_only, tmp_path, monkeypatch):
    from tl_core.projects import archive

    monkeypatch.setattr(archive.shutil, "disk_usage", lambda p: type("Usage", (), {"total": 10**9, "used": 10**9, "free": 1000})())
    refused(data_only, tmp_path / "dest", "disk is full")
    with pytest.raises(ExportError, match="disk is full"):
        tl_core.save_project(tmp_path / "again.tlproj", tmp_path / "pics")
    assert not (tmp_path / "again.tlproj").exists()


# -- saving: what is refused -----------------------------------------------------------------------

def test_save_never_replaces_a_file_and_checks_its_inputs(trained, data_only, tmp_path):
    _base, data, run_dir = trained
    before = data_only.read_bytes()
    with pytest.raises(ExportError, match="already exists"):
        tl_core.save_project(data_only, tmp_path / "pics")
    assert data_only.read_bytes() == before
    with pytest.raises(RunError, match="trained on the pictures in"):
        tl_core.save_project(tmp_path / "mixed.tlproj", tmp_path / "pics", [run_dir])
    with pytest.raises(ConfigError, match="plain data"):
        tl_core.save_project(tmp_path / "c.tlproj", tmp_path / "pics", choices={"when": object()})
    assert not list(tmp_path.glob("mixed*")) and not list(tmp_path.glob("c.tlproj*"))
    folder = tmp_path / "into"
    folder.mkdir()
    assert tl_core.save_project(folder, tmp_path / "pics") == folder / "pics.tlproj"
    assert tl_core.save_project(folder, tmp_path / "pics") == folder / "pics-2.tlproj"
    assert runs_of_data(data, run_dir.parent) == [run_dir] and runs_of_data(tmp_path / "pics", run_dir.parent) == []


# -- the command line ----------------------------------------------------------------------------

def last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.strip()][-1])


def test_cli_project_save_and_open(trained, tmp_path, capsys):
    _base, data, run_dir = trained
    out = tmp_path / "cli"
    assert main(["project", "save", str(out), "--data", str(data), "--all-runs",
                 "--runs-dir", str(run_dir.parent)]) == 0
    printed = capsys.readouterr().out
    assert "Saving: 100%" in printed
    saved = last_json(printed)
    assert saved["path"] == str(out) + ".tlproj" and saved["runs"] == [run_dir.name]
    assert saved["data_root"] == str(data) and saved["images"] == 60 and saved["bytes"] == Path(saved["path"]).stat().st_size

    assert main(["project", "open", saved["path"], "--dest", str(tmp_path / "there"), "--quiet"]) == 0
    opened = last_json(capsys.readouterr().out)
    assert opened["path"] == str(tmp_path / "there" / "cli") and opened["data_root"] == str(tmp_path / "there" / "cli" / data.name)
    assert [Path(r).name for r in opened["runs"]] == [run_dir.name] and opened["bytes"] > 0
    assert RunFolder(opened["runs"][0]).config().data.root == opened["data_root"]

    junk = tmp_path / "junk.tlproj"
    junk.write_bytes(b"hello")
    assert main(["project", "open", str(junk), "--dest", str(tmp_path / "there")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("Error: ") and "not a Transfer Lab project" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert main(["project", "save", str(out), "--data", str(data)]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["project", "save", str(tmp_path / "x")])  # --data is required


def test_cli_says_set_aside_pictures_travel_and_can_leave_them_out(data_only, tmp_path, capsys):
    from tl_core.data import fixes

    data = tmp_path / "pics"
    fixes.set_aside(data, sorted((data / "bag").iterdir())[0])
    assert main(["project", "save", str(tmp_path / "with"), "--data", str(data), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "the 1 picture(s) you set aside" in printed and "--leave-out-set-aside" in printed
    assert last_json(printed)["set_aside"] == 1
    assert main(["project", "save", str(tmp_path / "without"), "--data", str(data), "--quiet",
                 "--leave-out-set-aside"]) == 0
    printed = capsys.readouterr().out
    assert "set aside" not in printed.splitlines()[0] and last_json(printed)["set_aside"] == 0


@pytest.mark.parametrize("name, folder", [("cats_and_dogs", "cats_and_dogs"), ("Photos 2024 (class 3B)", "Photos 2024 (class 3B)"),
                                          ("runs", "data"), ("choices.json", "data"), ("../up", "data"), (".hidden", "data"),
                                          ("a/b", "data"), ("", "data"), (None, "data"), (42, "data"), ("x" * 200, "data")])
def test_opened_pictures_keep_their_folder_name_only_when_it_is_safe(name, folder):
    from tl_core.projects.archive import _data_folder_name

    assert _data_folder_name({"data": {"name": name}}) == folder
