"""The browser UI (`cellpaint ui`): a Streamlit page (page.py) over plain functions (logic.py).

page.py imports streamlit and streamlit_drawable_canvas and runs only under `streamlit run`;
logic.py imports neither, so it can be unit-tested and reused.
"""
from pathlib import Path

PAGE = Path(__file__).with_name("page.py")
