"""What the Streamlit app needs and the CLI never uses, kept out of the library's core.

Still Streamlit-free (tested headless): the pages in ``pages/`` are the only code that draws.

- :mod:`~tl_core.app.workspace`   where uploads, remembered choices and runs live on disk
- :mod:`~tl_core.app.state`       the user's choices and which run to show
- :mod:`~tl_core.app.sessions`    one set of choices per browser session; "Continue where you left off"
- :mod:`~tl_core.app.live`        the live view of a run, read from its folder
- :mod:`~tl_core.app.previews`    cached data checks, examples per category, the split preview
- :mod:`~tl_core.app.formatting`  numbers and settings in plain words
- :mod:`~tl_core.app.jobs`        training in a background thread owned by the server
- :mod:`~tl_core.app.timing`      time estimates measured in the background for the Model page
- :mod:`~tl_core.app.plots`       plotly figures from run data
- :mod:`~tl_core.app.aftercare`   a finished run's evaluation and bundle, prepared in the background
"""
