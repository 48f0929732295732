"""Data: bring the pictures (folder, zip, a path on this computer or the sample), see what is in
them and what is wrong with them, and choose how many to keep aside for checking."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages._shared import require_app, figure, guard, header, next_step, save, ui
from tl_core.app.formatting import markdown_safe
from tl_core.app.previews import checked_dataset, display_picture, examples_per_class, odd_look, split_preview
from tl_core.app.workspace import folder_access, new_upload_dir, upload_limit_mb, uploaded_signature

require_app(__file__)

THUMBS_PER_CLASS = 6
ODD_SHOWN = 8   # odd pictures shown at once; the rest behind "more"
SEVERITY_ICON = {"error": ":material/block:", "warning": ":material/warning:", "info": ":material/info:"}

header("Data", "Give the model examples to learn from: **one folder per category**, named after the "
       "category (for example `cats/` and `dogs/`), with the pictures inside. About 20 or more pictures "
       "per category is a good start.")

state = ui()
limit = upload_limit_mb()


def use_folder(root: str | Path, source: str) -> None:
    state.data_root, state.data_source = str(root), source
    save()


tab_folder, tab_zip, tab_path, tab_camera, tab_sample = st.tabs(
    [":material/folder_open: Drag in a folder", ":material/folder_zip: Upload a .zip", ":material/computer: A folder on this computer", ":material/photo_camera: Camera", ":material/checkroom: Sample data"])

with tab_folder:
    st.caption(f"Drag a folder onto the box below, or click **Upload directories** and choose it. Its subfolders "
               f"become the categories. Up to {limit} MB per file; the pictures are saved in the workspace folder "
               "as they arrive.")
    files = st.file_uploader("Folder of pictures (one subfolder per category)", accept_multiple_files="directory",
                             key="data_upload_dir")
    if files:
        sig = uploaded_signature(files)
        if st.session_state.get("data_upload_dir_sig") != sig:
            with guard():
                from tl_core.app.classroom import check_upload
                from tl_core.data.uploads import save_uploaded_files

                check_upload(sum(int(getattr(f, "size", 0) or 0) for f in files), files=len(files))  # per-student limits
                dest = new_upload_dir("folder")
                with st.spinner(f"Saving {len(files)} files…"):
                    report = save_uploaded_files(((f.name, f) for f in files), dest)
                st.session_state["data_upload_dir_sig"] = sig
                use_folder(report.dest, "upload")
                st.session_state["data_upload_msg"] = (len(report.saved), [p.message for p in report.skipped])
        msg = st.session_state.get("data_upload_msg")
        if msg:
            saved, skipped = msg
            st.success(f"Saved {saved} files.", icon=":material/check_circle:")
            if skipped:
                with st.expander(f"{len(skipped)} files were not saved"):
                    for item in skipped[:50]:
                        st.write(f"- {item}")

with tab_zip:
    st.caption(f"Drag a .zip file onto the box below, or click **Upload** and choose it. Its folders become the "
               f"categories (up to {limit} MB).")
    zfile = st.file_uploader("Zip file", type=["zip"], key="data_upload_zip")
    if zfile is not None:
        sig = uploaded_signature([zfile])
        if st.session_state.get("data_upload_zip_sig") != sig:
            with guard():
                from tl_core.app.classroom import check_unpacked, check_upload
                from tl_core.data.uploads import extract_zip

                check_upload(int(getattr(zfile, "size", 0) or 0))  # per-student limits
                dest = new_upload_dir("zip")
                with st.spinner("Unpacking…"):
                    report = extract_zip(zfile, dest)
                check_unpacked(report.dest)
                st.session_state["data_upload_zip_sig"] = sig
                use_folder(report.dest, "zip")
                st.success(f"Unpacked {len(report.saved)} files.", icon=":material/check_circle:")
                if report.skipped:
                    with st.expander(f"{len(report.skipped)} files were not unpacked"):
                        for item in list(report.skipped)[:50]:
                            st.write(f"- {item.message}")

with tab_path:
    st.caption("Fastest for big folders: nothing is copied. Type or paste the folder's path, then press Enter or "
               "click **Use this folder**.")

    def typed_enter() -> None:  # Enter in the field ("Press Enter to apply") does what the button does
        st.session_state["data_path_entered"] = True

    access = folder_access(st.get_option("server.address"))
    if not access.enabled:
        st.info("Typing a folder path is switched off on this shared server: everyone here would be able to "
                "read the server's folders. Upload your pictures as a folder or a .zip instead.",
                icon=":material/lock:")
    else:
        if access.roots:
            st.caption("On this server, only folders inside " + ", ".join(f"`{r}`" for r in access.roots)
                       + " can be used.")
        typed = st.text_input("Folder path", placeholder="/home/me/Pictures/my-categories", key="data_path",
                              on_change=typed_enter)
        use_path = st.button("Use this folder", key="data_use_path")
        entered = st.session_state.pop("data_path_entered", False)
        if use_path or (entered and typed.strip()):
            with guard():
                use_folder(access.check(typed), "path")

with tab_camera:  # issue 15: pictures taken here land in a category folder that becomes the data folder
    from pages._camera import take_pictures

    st.markdown("**Take pictures with the camera**")
    take_pictures()

with tab_sample:
    st.caption("200 small photos of clothes from Fashion-MNIST, in 5 categories.")
    if st.button("Use the sample data", key="data_use_sample", type="primary"):
        from tl_core.data.sample import sample_dir

        use_folder(sample_dir(), "sample")

root = state.data_root
if not root:
    st.info("No pictures chosen yet. Pick one of the five ways above.", icon=":material/arrow_upward:")
    st.stop()
if not Path(root).is_dir():
    st.error(f"The folder {root} is gone. Choose your pictures again.", icon=":material/warning:")
    state.data_root = None
    save()
    st.stop()

st.divider()
source_words = {"sample": "the sample data", "upload": "your uploaded folder", "zip": "your zip file",
                "path": "a folder on this computer", "run": "the folder of your last run",
                "camera": "the pictures you took with the camera"}
st.subheader("What is in your data")
st.caption(f"Using {source_words.get(state.data_source, 'this folder')}: `{root}`")

report = None
with guard():
    bar = st.progress(0.0, text="Opening every picture to check it…")

    def progress(done: int, total: int) -> None:  # opening every picture (the odd-picture look is in the background)
        bar.progress(done / total if total else 1.0, text=f"Checking every picture… {done / total if total else 1:.0%}")

    report = checked_dataset(root, progress=progress)
    bar.empty()

if report is None:
    st.stop()
look = odd_look(root, report)
if look.running:
    look.thread.join(timeout=1.5)   # a small or remembered folder is done by now: no second drawing

classes = list(report.scan.classes)
counts = dict(report.counts)
facts = None
with guard():
    facts = split_preview(root, state.val_fraction, report=report)  # the split training will use, exactly
if facts is None:
    st.stop()
if "data_val_pct" in st.session_state and facts.kind == "random":  # the slider below, as just moved
    pct_now = st.session_state["data_val_pct"] / 100
    if abs(pct_now - state.val_fraction) > 1e-9:
        state.val_fraction = pct_now
        save()
        facts = split_preview(root, state.val_fraction, report=report)
c1, c2, c3 = st.columns(3)
c1.metric("Pictures", f"{sum(counts.values()):,}")
c2.metric("Categories", len(classes))
serious = [p for p in report.problems + look.problems if p.severity in ("error", "warning")]
c3.metric("Problems found", len(serious))
st.caption(f"Split used for training: {facts.describe()}.")

left, right = st.columns([3, 2], gap="large")
with left:
    fig = figure("class_counts_chart", {c: facts.per_class.get(c, (0, 0))[0] for c in classes},
                 {c: facts.per_class.get(c, (0, 0))[1] for c in classes})
    if fig is not None:
        st.plotly_chart(fig, key="data_counts_chart")
with right:
    st.markdown("**Categories**")
    st.dataframe([{"Category": c, "Pictures": counts.get(c, 0)} for c in classes], hide_index=True)

st.subheader("Examples")
examples = examples_per_class(report.readable, THUMBS_PER_CLASS)
with guard():
    from tl_core.data.images import load_image

    for label in classes:
        recs = examples.get(label, [])
        st.markdown(f"**{markdown_safe(label)}** · {counts.get(label, 0)} pictures")
        cols = st.columns(THUMBS_PER_CLASS)
        for col, rec in zip(cols, recs):
            try:
                img = display_picture(load_image(rec.path), 160)
                col.image(img, caption=markdown_safe(Path(rec.rel_path).name), width="stretch")
            except Exception as err:  # an example that fails to load must not hide the others
                col.caption(markdown_safe(f"(cannot show {Path(rec.path).name}: {err})"))

def problem_box(p) -> None:
    text = f"**{markdown_safe(p.message)}**"  # messages name categories and files: shown as typed
    if p.fix:
        text += f"  \n*What to do:* {markdown_safe(p.fix)}"
    if p.path:
        text += f"  \n`{p.path}`"
    {"error": st.error, "warning": st.warning}.get(p.severity, st.info)(text, icon=SEVERITY_ICON.get(p.severity))


def odd_picture_row(p) -> None:
    """An odd picture: seen at a glance (a placeholder or a screenshot is obvious), with its message."""
    pic, words = st.columns([1, 4], vertical_alignment="center")
    try:
        from tl_core.data.images import load_image

        pic.image(display_picture(load_image(p.path), 160), caption=markdown_safe(Path(p.path).name))
    except Exception as err:  # the picture went away since the check: the words still say which
        pic.caption(markdown_safe(f"(cannot show {Path(p.path).name}: {err})"))
    with words:
        problem_box(p)


def odd_pictures_part(look) -> None:
    odd_pictures = look.problems
    if odd_pictures:
        n_odd = len(odd_pictures)
        st.markdown((f"**{n_odd} picture looks unlike the rest of its category**" if n_odd == 1 else
                     f"**{n_odd} pictures look unlike the rest of their category**, most unusual first")
                    + " (as the pretrained network sees them; an unusual but right picture can stay).")
        for p in odd_pictures[:ODD_SHOWN]:
            odd_picture_row(p)
        if len(odd_pictures) > ODD_SHOWN:
            with st.expander(f"{len(odd_pictures) - ODD_SHOWN} more"):
                for p in odd_pictures[ODD_SHOWN:]:
                    odd_picture_row(p)
    note = look.found.note if look.found is not None else look.message
    if note:
        st.caption(markdown_safe(note))


@st.fragment(run_every=1.0)
def odd_pictures_waiting(root: str) -> None:
    """Redrawn every second while the network looks at the pictures; the whole page once it is done."""
    look = odd_look(root, report)
    if not look.running:
        st.rerun(scope="app")
    st.progress(look.fraction, text=f"Looking for pictures unlike the rest of their category… {look.fraction:.0%} "
                                    "(everything else on this page is ready; you can go on meanwhile)")


st.subheader("Problems found")
if not report.problems and not look.problems and not look.running:
    looked = " no picture looks out of place," if look.found is not None and look.found.categories else ""
    st.success(f"No problems found: every picture opened, no copies,{looked} the categories are balanced.",
               icon=":material/check_circle:")
order = {"error": 0, "warning": 1, "info": 2}
for p in sorted(report.problems, key=lambda p: order.get(p.severity, 3)):
    problem_box(p)
if look.running:
    odd_pictures_waiting(str(root))
else:
    odd_pictures_part(look)

st.subheader("Keep some aside to check the model")
st.caption("The model never trains on these pictures; they show how well it does on pictures it has not seen.")
if facts.kind == "folder":
    st.info("Your folder has its own **train/** and **val/** folders, so that split is used as it is: the "
            "pictures in val/ are the ones kept aside to check the model (no percentage is applied).",
            icon=":material/content_cut:")
else:
    pct = st.slider("Share kept aside to check the model (%)", min_value=5, max_value=50, step=5,
                    value=int(round(state.val_fraction * 100)), key="data_val_pct",
                    help="The validation set: kept aside at random, per category; copies of a picture stay on the "
                         "same side.")
    if abs(pct / 100 - state.val_fraction) > 1e-9:
        state.val_fraction = pct / 100
        save()
        facts = split_preview(root, state.val_fraction, report=report)
st.markdown(f"**Split used for training:** {facts.describe(detailed=True)}.")
for note in facts.notes:
    st.warning(markdown_safe(note), icon=":material/content_cut:")
rows = [{"Category": c, "For training": facts.per_class.get(c, (0, 0))[0],
         "For checking": facts.per_class.get(c, (0, 0))[1]} for c in classes]
rows.append({"Category": "Total", "For training": facts.n_train, "For checking": facts.n_val})
if facts.n_test:
    for row in rows[:-1]:
        row["In test/"] = facts.test_per_class.get(row["Category"], 0)
    rows[-1]["In test/"] = facts.n_test
st.dataframe(rows, hide_index=True)

if len(classes) >= 2 and sum(counts.values()) > 0:
    next_step("model", "Next: choose a model")
