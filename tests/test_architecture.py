"""The rules of docs/ARCHITECTURE.md, checked on the source so a change that breaks one fails here."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import tl_core

ROOT = Path(tl_core.__file__).resolve().parent
REPO = ROOT.parent
TOP_LEVEL_LIMIT = 8   # modules at tl_core's top level besides __init__ and __main__
PACKAGES = {"app", "data", "models", "results", "runs", "runtime", "training"}


def _sources(folder: Path = ROOT):
    for path in sorted(folder.rglob("*.py")):
        yield path, path.read_text(encoding="utf-8")


def _imports(source: str) -> set[str]:
    """Absolute module names a file imports (``from x import y`` gives x and x.y)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_layout_is_grouped_by_job():
    top = sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= TOP_LEVEL_LIMIT, top
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert PACKAGES <= packages, PACKAGES - packages


def test_no_streamlit_anywhere_in_tl_core():
    for path, src in _sources():
        assert not any(m == "streamlit" or m.startswith("streamlit.") for m in _imports(src)), path


def test_only_the_app_package_uses_the_app_package():
    """tl_core minus tl_core.app is what the CLI, the tests and a future server need."""
    for path, src in _sources():
        if path.is_relative_to(ROOT / "app"):
            continue
        assert not any(m == "tl_core.app" or m.startswith("tl_core.app.") for m in _imports(src)), path


def test_one_model_builder():
    """Only models/builder.py calls timm.create_model (the bundle's predict.py is a standalone script)."""
    callers = {path.relative_to(REPO).as_posix() for folder in (ROOT, REPO / "pages")
               for path, src in _sources(folder) if "timm.create_model(" in src}
    assert callers <= {"tl_core/models/builder.py", "tl_core/results/templates/predict.py"}, callers


def test_no_private_imports_across_modules():
    """Neither tl_core's nor timm's private names are imported from another module."""
    private = re.compile(r"(^|\.)_[a-z]")
    for path, src in _sources():
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("__"):
                assert not private.search(node.module), (path, node.module)
                if node.module.startswith(("tl_core", "timm")):
                    names = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                    assert not names, (path, node.module, names)


def test_pages_use_no_private_tl_core_names():
    for path in sorted((REPO / "pages").glob("*.py")) + [REPO / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tl_core"):
                assert not [a.name for a in node.names if a.name.startswith("_")], path


def test_event_names_live_in_one_place():
    """The engine, the recorder, the live view and the CLI use tl_core.runs.events, not literals."""
    literal = re.compile(r"""["']on_(fit_start|prepare|batch_end|epoch_end|warning|fit_end)["']""")
    for path, src in _sources():
        if path == ROOT / "runs" / "events.py":
            continue
        assert not literal.search(src), path


def test_public_api_is_at_the_package_root():
    for name in ("train", "evaluate", "predict", "export", "check", "catalogue", "RunConfig"):
        obj = getattr(tl_core, name)
        assert obj.__doc__, name
    src = (ROOT / "cli.py").read_text(encoding="utf-8")
    for call in ("tl_core.train(", "tl_core.evaluate(", "tl_core.predict(", "tl_core.export(", "tl_core.check("):
        assert call in src, call
