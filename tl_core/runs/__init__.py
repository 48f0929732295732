"""Runs on disk: the run folder (:mod:`~tl_core.runs.folder`) and what a run says while it trains
(:mod:`~tl_core.runs.events`). A run folder alone is enough to evaluate, predict, export and redraw.
Deleting a run moves it to the trash (``trash_run``), from where ``restore_run`` brings it back.
``check_run`` (:mod:`~tl_core.runs.validate`) checks a run folder or bundle before it is loaded; what
each file must hold is in :mod:`~tl_core.runs.contents`."""
from tl_core.runs.folder import (ACTIVE_STATES, CONFIG_FILE, LABELS_FILE, METRICS_FILE, NOTE_MAX_CHARS,
                                 PREPROCESSING_FILE, STATES, STATUS_FILE, SUMMARY_FILE, TITLE_MAX_CHARS, TRASH_DIR,
                                 USER_FILE, WEIGHTS_FILE, RunFolder, default_runs_dir, empty_trash, list_runs,
                                 list_trash, new_run_id, read_json, restore_run, trash_dir, trash_run)
from tl_core.runs.validate import CheckedRun, check_run

__all__ = ["RunFolder", "list_runs", "default_runs_dir", "new_run_id", "read_json", "STATES", "ACTIVE_STATES",
           "CONFIG_FILE", "STATUS_FILE", "METRICS_FILE", "WEIGHTS_FILE", "LABELS_FILE", "PREPROCESSING_FILE",
           "SUMMARY_FILE", "USER_FILE", "TRASH_DIR", "TITLE_MAX_CHARS", "NOTE_MAX_CHARS",
           "trash_run", "restore_run", "list_trash", "empty_trash", "trash_dir", "check_run", "CheckedRun"]
