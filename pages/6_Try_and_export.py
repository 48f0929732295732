"""Try & export: classify a new photo (upload or camera), see what the model looked at, and take the
model home (a ready-to-use bundle, ONNX or TorchScript)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages._shared import (figure, guard, header, loaded_model, prepared_download, require_app,
                           run_picker)
from tl_core.app.formatting import markdown_safe
from tl_core.app.previews import display_picture
from tl_core.results import explain, export

require_app(__file__)

header("Try & export", "Give the model a picture it has never seen and look at its answer. When you are happy, "
       "download it to use in your own program.")

with guard():
    run_dir = run_picker("try_run", "Model (run)", only_with_weights=True)
    if run_dir is None:
        st.info("No trained model yet. Train one on the **Train** page first.", icon=":material/fitness_center:")
        st.page_link("pages/4_Train.py", label="Go to Train", icon=":material/fitness_center:")
        st.stop()

    loaded = loaded_model(run_dir)
    st.caption(f"Knows {len(loaded.classes)} categories: {', '.join(markdown_safe(c) for c in loaded.classes)}")

    st.subheader("Try it")
    source = st.radio("Picture from", ["Upload a photo", "Camera", "Live camera"], horizontal=True, key="try_source",
                      help="Live camera: the model answers the video continuously (issue 15).")
    data, name = None, None
    if source == "Live camera":
        from pages._camera import live_predictions

        live_predictions(loaded, run_dir)
    elif source == "Upload a photo":
        up = st.file_uploader("Photo", type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "heic"],
                              key="try_upload")
        if up is not None:
            data, name = up.getvalue(), up.name
    else:
        shot = st.camera_input("Take a picture", key="try_camera")
        if shot is not None:
            data, name = shot.getvalue(), "camera.jpg"

    threshold = 0.5 if source == "Live camera" else st.slider(
        "Say “not sure” below this confidence", 0.0, 1.0, 0.5, 0.05, key="try_threshold",
        help="When the top answer's probability is below this, the model admits it does not know.")
    if data is not None:
        with guard():
            from tl_core.data.images import load_image_bytes

            image = load_image_bytes(data, name)
            if not loaded.novelty_ready():
                with st.spinner("Getting ready to say “none of these” (once for this model: it looks at the "
                                "pictures it learned from)…"):
                    loaded.novelty()
            answer = loaded.answer(image, k=min(5, len(loaded.classes)))
            top = answer["top"]
            best = top[0]
            best_label = markdown_safe(best["label"])   # a category name is shown as typed, not as markdown
            left, right = st.columns([1, 2])
            with left:
                st.image(display_picture(image, 420), caption=markdown_safe(name), width="stretch")
            with right:
                if answer["none_of_these"]:
                    st.warning(f"### None of these?\nThis looks like none of the categories it learned: the picture "
                               f"is unlike every picture it was taught with. Its best guess would be **{best_label}** "
                               f"({best['probability']:.1%}), but it cannot be sure of that.", icon=":material/block:")
                elif answer["unsure"] and len(top) > 1:
                    second = top[1]
                    st.warning(f"### Not sure\nIt hesitates between **{best_label}** ({best['probability']:.1%}) "
                               f"and **{markdown_safe(second['label'])}** ({second['probability']:.1%}).",
                               icon=":material/help:")
                elif best["probability"] >= threshold:
                    st.success(f"### {best_label}\n{best['probability']:.1%} sure", icon=":material/check_circle:")
                else:
                    st.warning(f"### Not sure\nBest guess: **{best_label}** at only {best['probability']:.1%} "
                               f"(below your {threshold:.0%} threshold). The picture may show something it was not "
                               "trained on.", icon=":material/help:")
                if answer["none_of_these"] is None and loaded.novelty_problem:
                    st.caption(markdown_safe(loaded.novelty_problem))
                fig = figure("topk_bars", top)
                if fig is not None:
                    st.plotly_chart(fig, key="try_topk")
                else:
                    st.dataframe([{"Category": t["label"], "Probability": f"{t['probability']:.1%}"} for t in top],
                                 hide_index=True)
            if st.toggle("Show what it looked at", value=True, key="try_cam",
                         help="Grad-CAM: a heat map of the parts of the picture that pushed the model's answer up."):
                with st.spinner("Working out where it looked…"):
                    over = explain.overlay(image, explain.gradcam(loaded, image), keep_shape=True,
                                           preprocessing=loaded.preprocessing)
                st.image(display_picture(over, 420), caption=f"Red: the parts that made it say {best_label}"
                                       + ("" if image.width == image.height
                                          or loaded.preprocessing.crop_mode == "squash"
                                          else " (greyed: the edges it did not see)"), width=420)

    st.subheader("Take it home")
    run_name = Path(run_dir).name
    a, b = st.columns([1, 2], vertical_alignment="center")
    from tl_core.app import aftercare

    ready = aftercare.bundle_is_ready(run_dir)
    a.download_button("Download the bundle (.zip)", data=lambda: aftercare.bundle_bytes(run_dir),
                      file_name=f"{run_name}.zip", mime="application/zip", key="try_dl_bundle",
                      type="primary", icon=":material/inventory_2:", on_click="ignore", width="stretch",
                      help="The weights (safetensors), the category names, the preprocessing, a small predict.py "
                           "script and a model card.")
    b.caption("Everything needed to use your model in Python: the trained model, its category names and a "
              "small script that classifies a photo, checked to give the same answers as here. "
              + ("Ready: it was prepared when training finished." if ready else "Made when you click (a few seconds)."))
    st.markdown("**Using it from another program?** The same model as a single file, checked against the "
                "original on real pictures before you get it:")
    c, d = st.columns(2)
    prepared_download(c, "try_dl_onnx", run_dir, "ONNX (.onnx)", lambda: export.onnx_bytes(run_dir),
                      f"{run_name}.onnx", "application/octet-stream", icon=":material/sync_alt:",
                      help="For other languages and runtimes (ONNX Runtime, OpenCV, C#, JavaScript…).")
    prepared_download(d, "try_dl_ts", run_dir, "TorchScript (.pt)", lambda: export.torchscript_bytes(run_dir),
                      f"{run_name}.pt", "application/octet-stream", icon=":material/local_fire_department:",
                      help="For PyTorch programs without Transfer Lab (torch.jit.load).")
    c.caption("For apps in other languages (C#, JavaScript, C++…).")
    d.caption("For PyTorch programs.")
