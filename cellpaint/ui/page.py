"""The Streamlit page of `cellpaint ui`: choose an image, paint the mask, restore, look and download.

Run under `streamlit run` only (streamlit_drawable_canvas refuses to import elsewhere). All the
work is in logic.py; this file lays out widgets and shows messages, never tracebacks.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

try:
    import cellpaint  # noqa: F401
except ImportError:  # `streamlit run path/to/page.py` puts only the page's folder on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from cellpaint.ui import logic
from shared.options import offered

st.set_page_config(page_title="cellpaint: restore a cell", layout="wide")


def _allowed_endpoints() -> tuple[str, ...]:
    """The endpoints `cellpaint ui --allow-endpoint` passed (`streamlit run page.py -- ...`)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--allow-endpoint", action="append", default=[])
    return tuple(p.parse_known_args(sys.argv[1:])[0].allow_endpoint)


@st.cache_resource(show_spinner="Loading the model…")
def _inpainter(weights: str | None):
    return logic.load_inpainter(weights)


def _labels(inpainter) -> list[str]:
    if inpainter is not None:
        return ["auto", "none", *inpainter.classes]
    from shared.options import LABELS

    return ["auto", "none", *LABELS]


def _choose_image():
    """Sidebar: upload or example -> (image, base mask, name) or (None, None, None)."""
    st.sidebar.header("1. Image")
    source = st.sidebar.radio("Source", ["Upload an image", "Shipped example"], key="source")
    if source == "Shipped example":
        image, mask, err = logic.load_example()
        if err:
            (st.warning if image is None else st.error)(_md(err))
        return image, mask, "example"
    up = st.sidebar.file_uploader("Cell image (PNG, JPEG or TIFF)", type=["png", "jpg", "jpeg", "tif", "tiff"], key="upload")
    if up is None:
        st.info("Upload a cell image in the sidebar, or choose the shipped example.")
        return None, None, None
    image, err = logic.decode_upload(up.getvalue(), up.name)
    if err:
        _error(f"Cannot use this upload: {err}")
        return None, None, None
    base = None
    mup = st.sidebar.file_uploader("Optional mask to start from (PNG, white = restore)", type=["png"], key="mask_upload")
    if mup is not None:
        base, merr = logic.decode_mask_upload(mup.getvalue(), mup.name, image.shape[:2])
        if merr:
            _error(f"Cannot use this mask: {merr}")
            base = None
    return image, base, Path(up.name).stem


def _widget(o, choices: tuple | list):
    """One option's widget, made from its declaration (shared/options.py): a checkbox for a
    switch, a select box for choices, a slider for a bounded number, a number box for a count."""
    title, key, help_ = o.title or o.name.replace("_", " ").capitalize(), o.name, o.help[:1].upper() + o.help[1:]
    if o.kind is bool:
        return st.sidebar.checkbox(title, value=o.default, key=key, help=help_)
    if choices:
        return st.sidebar.selectbox(title, choices, index=list(choices).index(o.default) if o.default in choices else 0, key=key, help=help_)
    if o.kind is float and o.low is not None and o.high is not None:
        return float(st.sidebar.slider(title, float(o.low), float(o.high), float(o.default), (o.high - o.low) / 10, key=key, help=help_))
    return int(st.sidebar.number_input(title, min_value=int(o.low or 0), max_value=int(o.high) if o.high is not None else None,
                                       value=o.default, step=1, key=key, help=help_))


def _options(inpainter_labels: list[str]) -> dict:
    """The sidebar's options: every option the declaration offers in the UI, in its order."""
    st.sidebar.header("4. Options")
    opts = {o.name: _widget(o, inpainter_labels if o.name == "label" else o.choices) for o in offered("ui")}
    opts["label"] = None if opts.get("label") == "none" else opts.get("label")
    return opts


def _show_result(image: np.ndarray, mask: np.ndarray, restored: logic.Restored) -> None:
    st.subheader("Result")
    if restored.warning:
        st.warning(restored.warning)
    titles = ["Original", "Mask (white = restore)", "Result"] + (["Uncertainty (std over samples)"] if restored.uncertainty is not None else [])
    pics = [image, (mask.astype(np.uint8) * 255), restored.image] + ([restored.uncertainty] if restored.uncertainty is not None else [])
    for col, title, pic in zip(st.columns(len(pics)), titles, pics):
        col.image(pic, caption=title, width="stretch", clamp=True)
    c1, c2, c3 = st.columns(3)
    c1.download_button("Download result (PNG)", logic.png_download(restored.image), file_name="inpainted.png", mime="image/png", on_click="ignore",
                       key="dl_result")
    c2.download_button("Download mask (PNG)", logic.mask_png(mask), file_name="mask.png", mime="image/png", key="dl_mask", on_click="ignore")
    if restored.uncertainty is not None:
        c3.download_button("Download uncertainty (PNG)", logic.png_download(restored.uncertainty), file_name="uncertainty.png",
                           mime="image/png", key="dl_unc", on_click="ignore")
    with st.expander("Run details"):
        st.json(restored.info)


def _md(text: str) -> str:
    """Plain text for st.markdown / st.error: no emphasis, links or LaTeX from file names or S3 keys."""
    return re.sub(r"([\\`*_\[\]<>|$~])", r"\\\1", str(text))


def _error(text: str) -> None:
    st.error(_md(text))


_STAGE_ICON = {"uploaded": "✅", "waiting": "⏳", "done": "✅", "failed": "❌", "timeout": "⌛", "error": "❌"}
_STAGE_NAME = {"uploaded": "uploaded", "waiting": "waiting for the result", "done": "result written", "failed": "failed",
               "timeout": "gave up waiting", "error": "error"}


def main() -> None:
    """The page, top to bottom. Long on purpose: a Streamlit page is a script of widgets in the
    order they appear, and read that way; each step's work is a call into logic.py."""
    st.title("cellpaint: paint a mask, restore the cell")
    st.markdown(f"**{logic.MODEL_SIZE_NOTE}**  \n**{logic.MASK_NOTE}**")

    image, base_mask, name = _choose_image()

    st.sidebar.header("2. Brush")
    tool = st.sidebar.radio("Tool", ["Brush (white = restore)", "Eraser (keep)"], key="tool")
    width = st.sidebar.slider("Brush width (screen px)", 2, 80, 24, key="brush_width")

    st.sidebar.header("3. Run")
    mode = st.sidebar.radio("Mode", ["Direct (local model)", "Pipeline (stack's bucket)"], key="mode")
    direct = mode.startswith("Direct")
    inpainter = None
    if direct:
        inpainter, load_err = _inpainter(os.environ.get("CELLPAINT_WEIGHTS") or None)
        if load_err:
            _error(load_err)
    else:
        st.sidebar.caption("Local stack: the endpoint URL `cellpaint local up` prints. Real AWS: leave the endpoint empty. "
                           "Other endpoints only if `cellpaint ui --allow-endpoint URL` allowed them.")
        bucket = st.sidebar.text_input("Bucket", value=os.environ.get("CELLPAINT_BUCKET", ""), key="bucket")
        region = st.sidebar.text_input("Region", value=os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
                                       key="region")
        endpoint = st.sidebar.text_input("Endpoint URL (local stack)", value=os.environ.get("CELLPAINT_ENDPOINT", ""), key="endpoint")
        timeout = st.sidebar.number_input("Give up after (s)", min_value=10, max_value=3600, value=900, step=10, key="timeout")
    opts = _options(_labels(inpainter))

    if image is None:
        return
    key = logic.image_key(image)
    h, w = image.shape[:2]
    ch, cw = logic.display_size(h, w)
    st.subheader("Paint the mask")
    st.caption(f"Image {w}x{h} px, shown at {cw}x{ch}. Paint over the part to restore; the eraser paints keep (dark)."
               + (" The given mask is tinted magenta." if base_mask is not None and base_mask.any() else ""))
    canvas = st_canvas(
        stroke_width=int(width),
        stroke_color=logic.RESTORE_COLOUR if tool.startswith("Brush") else logic.ERASE_COLOUR,
        background_image=logic.background_png(image, base_mask, (ch, cw)),
        height=ch,
        width=cw,
        drawing_mode="freedraw",
        return_image_data=True,
        update_streamlit=True,
        key=f"canvas-{key}",
    )
    try:
        rgba = canvas.image_data
    except Exception:  # nothing drawn yet / no data
        rgba = None
    mask = logic.canvas_to_mask(rgba, (h, w), base_mask)
    st.caption(f"Mask: {int(mask.sum())} px to restore ({100 * mask.mean():.1f}% of the image).")

    run = st.button("Restore", type="primary", key="run")
    state_key, log_key = f"result-{key}", f"log-{key}"
    if run:
        st.session_state.pop(state_key, None)
        st.session_state.pop(log_key, None)
        if direct:
            if inpainter is None:
                st.error("The local model is not loaded (see the message above); the pipeline mode may work instead.")
            else:
                with st.spinner(f"Restoring ({opts['steps']} steps, {opts['samples']} sample(s))…"):
                    restored, err = logic.run_direct(inpainter, image, mask, opts)
                if err:
                    _error(err)
                else:
                    st.session_state[state_key] = (mask, restored)
        else:
            pair = logic.new_pair_name(f"ui-{name}" if name and logic.check_pair_name(name) is None else "ui")
            log: list[str] = []
            st.session_state[log_key] = log
            box = st.container(border=True)
            box.markdown(f"**Pipeline run, pair `{pair}`**")
            lines = box.empty()
            for stage in logic.run_pipeline(image, mask, opts, bucket, region, endpoint, name=pair, timeout_s=float(timeout),
                                            allowed_endpoints=_allowed_endpoints()):
                line = f"{_STAGE_ICON.get(stage.kind, '•')} **{_STAGE_NAME.get(stage.kind, stage.kind)}**: {_md(stage.message)}"
                if stage.kind == "waiting" and log and log[-1].startswith(_STAGE_ICON["waiting"]):
                    log[-1] = line  # one line that counts up
                else:
                    log.append(line)
                lines.markdown("  \n".join(log))
                if stage.kind == "done":
                    st.session_state[state_key] = (mask, stage.result)
                elif stage.kind in ("failed", "timeout", "error"):
                    _error(stage.message)
    elif log_key in st.session_state:  # the stages of the last pipeline run stay in view
        st.container(border=True).markdown("**Last pipeline run**  \n" + "  \n".join(st.session_state[log_key]))
    if state_key in st.session_state:
        used_mask, restored = st.session_state[state_key]
        _show_result(image, used_mask, restored)


try:
    main()
except Exception as exc:  # the page shows a message, never a traceback
    st.error(_md(f"Something went wrong: {type(exc).__name__}: {exc}"))
