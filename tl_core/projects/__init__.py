"""A whole project as one file (``.tlproj``): the data folder's pictures, the runs trained on them
and the user's choices, so that it opens on another computer with the same predictions.

- :mod:`~tl_core.projects.archive`  save_project / open_project / read_manifest / runs_of_data;
  the file format and its manifest are described there.

Opening treats the file like an uploaded zip (:mod:`tl_core.data.uploads` unpacks it) and checks
every member's sha256 against the manifest before anything is moved into place.
"""
from tl_core.projects.archive import (CHOICES_FILE, FORMAT, FORMAT_VERSION, MANIFEST_FILE, PROJECT_SUFFIX,
                                      OpenedProject, open_project, read_manifest, runs_of_data, save_project,
                                      set_aside_pictures)

__all__ = ["save_project", "open_project", "read_manifest", "runs_of_data", "OpenedProject", "FORMAT",
           "FORMAT_VERSION", "PROJECT_SUFFIX", "MANIFEST_FILE", "CHOICES_FILE", "set_aside_pictures"]
