"""Transfer Lab core: teach a pretrained image model your own categories.

Everything the app and the CLI do lives here; this package never imports Streamlit.
"""
__version__ = "0.1.0"
