"""The Train page's "Your own data" box: upload a dataset, see and delete one's uploads, and offer them to the form.

What is checked, kept and who may is core/uploads.py's; this module lays out the widgets and says what core
answered in one sentence. An upload is taken in the uploader's callback, before the page's script runs, so the
settings form in the sidebar shows it chosen at once (source "uploaded", this upload).
"""

from __future__ import annotations

import math
from pathlib import Path

import streamlit as st

from core import access, uploads
from core.upload_files import megabytes
from ui import texts
from ui.form import KEY_PREFIX
from ui.identity import current_identity

UPLOADER = "upload_file"
MESSAGE = "upload_message"  # (kind, sentence): what became of the last file given
FILE_TYPES = ["npz", "zip", "gz", "tgz", "tar"]
SOURCE_KEY, UPLOAD_KEY = KEY_PREFIX + "source", KEY_PREFIX + "upload"


def upload_labels(listed: list[uploads.Upload], identity: access.Identity) -> dict[str, str]:
    """Who asks' uploads (core.uploads.list_uploads) as the form's Upload select shows them: SHA-256 ->
    'digits.npz · 1,000 + 200 images'."""
    return {upload.digest: f"{upload.name_for(identity)} · {upload.train:,} + {upload.test:,} images"
            for upload in listed}


def _take_upload(runs_dir: Path) -> None:
    """The uploader's callback: check and keep the file given, and choose it in the form; or say why not."""
    given = st.session_state.get(UPLOADER)
    st.session_state.pop(MESSAGE, None)
    if given is None:
        return
    identity = current_identity()
    try:
        upload = uploads.add_upload(given.getvalue(), given.name, runs_dir, identity=identity)
    except ValueError as error:  # DatasetError (the file), PermissionRefused, a bad service setting
        st.session_state[MESSAGE] = ("error", texts.plain(f"Not uploaded: {error}."))
        return
    st.session_state[SOURCE_KEY], st.session_state[UPLOAD_KEY] = "uploaded", upload.digest
    st.session_state[MESSAGE] = ("success", texts.plain(
        f"Kept {upload.describe(upload.name_for(identity))}; it is chosen in Settings (source: uploaded)."))


def _delete(runs_dir: Path, digest: str) -> None:
    """A Delete button's callback: let go of this upload (core decides whose it is), and of it in the form."""
    try:
        gone = uploads.delete_upload(runs_dir, digest, identity=current_identity())
    except ValueError as error:  # PermissionRefused, UploadGone, a run still training on it
        st.session_state[MESSAGE] = ("error", texts.plain(f"Not deleted: {error}."))
        return
    if st.session_state.get(UPLOAD_KEY) == digest:
        st.session_state[UPLOAD_KEY] = None
    st.session_state[MESSAGE] = ("success", "Deleted." if gone else
                                 "Deleted from your uploads (others who uploaded the same data keep it).")


def upload_box(runs_dir: Path, identity: access.Identity, listed: list[uploads.Upload]) -> None:
    """The uploader, what became of the last file, and the uploads this person may use (`listed`: the page lists
    them once a rerun, after the callbacks above have added or deleted one)."""
    if not access.may_train(identity):
        st.info("Sign in to upload a dataset of your own.")
        return
    try:
        max_upload, per_owner = uploads.limits()
    except ValueError as error:  # HYBRID_LAB_MAX_UPLOAD or HYBRID_LAB_UPLOADS_PER_OWNER set to something else
        st.error(texts.plain(f"Uploads are off until this is fixed: {error}."))
        return
    kept = (" by all guests together. A guest's uploads are let go a day later (a guest is this tab, gone once it "
            "is closed)" if access.is_guest_key(identity.key)
            else " per person. Uploads stay on this server until their owners delete them")
    st.caption(f"An .npz in Keras' layout (x_train, y_train, x_test, y_test), or a .zip or .tar.gz of the four IDX "
               f"files (gzipped or not): 28 × 28 images, labels 0 to 9. At most {megabytes(max_upload)} a "
               f"file and {megabytes(per_owner)} of uploads kept{kept}; runs record which one they used.")
    st.file_uploader("Upload a dataset", type=FILE_TYPES, key=UPLOADER, on_change=_take_upload, args=(runs_dir,),
                     max_upload_size=max(1, math.ceil(max_upload / 2**20)))
    kind, sentence = st.session_state.get(MESSAGE, (None, None))
    if kind:
        (st.error if kind == "error" else st.success)(sentence)
    if not listed:
        st.caption("No uploads yet." if not identity.is_operator else "No uploads on this server yet.")
        return
    st.markdown("**Your uploads**" if not identity.is_operator else "**Uploads on this server**")
    for upload in listed:
        _upload_row(runs_dir, upload, identity)


def _upload_row(runs_dir: Path, upload: uploads.Upload, identity: access.Identity) -> None:
    """One upload: its name, counts, classes and size (its owners, for an operator), and Delete."""
    words, delete = st.columns([5, 1], vertical_alignment="center")
    owners = ""
    if identity.is_operator:
        names = sorted({record.get("name", "?") for record in upload.owners.values()})
        owners = f" · uploaded by {', '.join(names)}"
    words.markdown(texts.plain(upload.describe(upload.name_for(identity))) + f" · {megabytes(upload.size)} · "
                   f"`{upload.digest[:12]}`" + texts.plain(owners))
    delete.button("Delete", key=f"upload_delete_{upload.digest}", icon=":material/delete:", width="stretch",
                  on_click=_delete, args=(runs_dir, upload.digest),
                  help="Your uploads are yours: deleting one lets go of your copy; runs keep naming it by its SHA-256.")
