"""From a folder of pictures to what training needs, and every way a folder can be wrong.

- :mod:`~tl_core.data.scan`     the folder layout -> labelled records, without opening a picture
- :mod:`~tl_core.data.images`   open any picture a beginner drops in (EXIF, modes, sizes, HEIC)
- :mod:`~tl_core.data.checks`   unreadable files, copies, leakage, imbalance: each with its fix
- :mod:`~tl_core.data.split`    the stratified, seeded, copy-aware train/validation split
- :mod:`~tl_core.data.dataset`  the one call the trainer makes: scan, check, split (and a test folder)
- :mod:`~tl_core.data.uploads`  pictures from the browser (folders, zips), put on disk safely
- :mod:`~tl_core.data.sample`   the bundled sample and Fashion-MNIST folders for demos and tests
"""
