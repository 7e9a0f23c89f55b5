"""Case records and sign-in in the app: the sidebar's case code and "keep image", recording each prediction once,
report downloads, and the sign-in gate (off unless .streamlit/secrets.toml configures users or single sign-on)."""
from __future__ import annotations

import hashlib
import json
import math

import streamlit as st

from core import auth, records, report
from core.imageio import encode_png
from ui.common import escape_markdown, is_handed


# --- sign-in ----------------------------------------------------------------------------------------------------------
def auth_config() -> auth.AuthConfig:
    """The [auth] table of the app's secrets; raises ValueError when it is malformed."""
    try:
        secrets = st.secrets.to_dict()
    except Exception:  # noqa: BLE001 - no secrets file (or an unreadable one) means sign-in is off
        secrets = {}
    return auth.config_from_secrets(secrets)


def current_user() -> auth.User | None:
    """The signed-in user, or None (also when sign-in is off: then everyone sees every record)."""
    try:
        config = auth_config()
    except ValueError:
        return None
    if not config.enabled:
        return None
    signed = st.session_state.get("auth_user")
    if signed:
        return auth.User(signed["name"], signed["role"])
    if config.oidc_providers and st.user.is_logged_in:
        name = st.user.get("email") or st.user.get("name") or st.user.get("sub")
        return auth.User(str(name), config.role_of(str(name)))
    return None


def require_login(sidebar: bool = True) -> auth.User | None:
    """When sign-in is configured: the signed-in user (with, if sidebar, who it is and a sign-out button in the
    sidebar), or a sign-in form and the page stops. When it is not configured: None, and the page goes on.
    app.py calls it for every page; pages that show records call it too (sidebar=False), because Streamlit runs a
    file in a pages/ folder on its own when its URL is opened first (this app keeps its pages in app_pages/)."""
    try:
        config = auth_config()
    except ValueError as exc:
        st.error(f"Sign-in is configured wrongly in .streamlit/secrets.toml: {exc}", icon=":material/lock:")
        st.stop()
    if not config.enabled:
        return None
    user = current_user()
    if user is not None:
        if not sidebar:
            return user
        with st.sidebar:
            st.caption(f"Signed in as **{user.name}**" + (" (admin)" if user.is_admin else ""))
            st.button("Sign out", on_click=_sign_out, key="auth_sign_out", icon=":material/logout:")
        return user
    _sign_in_form(config)
    st.stop()


def may_read_server_files(user: auth.User | None) -> bool:
    """Whether this session may name files on the server's disk (folders to score, evaluate or stage): an admin when
    sign-in is on; with it off, only a browser on the server itself, since the app may be reachable from the network
    (behind a proxy on the same machine every browser looks local: turn sign-in on there)."""
    if user is not None:
        return user.is_admin
    address = st.context.ip_address  # None from this machine (Streamlit maps 127.0.0.1 and ::1 to None)
    return not isinstance(address, str) or address in ("127.0.0.1", "::1")  # (AppTest gives a mock: local too)


def _sign_in_form(config: auth.AuthConfig) -> None:
    st.title("Sign in")
    st.caption("This dashboard keeps case records, so it asks who you are.")
    if config.users:
        with st.form("auth_sign_in"):
            name = st.text_input("User name", autocomplete="username")
            password = st.text_input("Password", type="password", autocomplete="current-password")
            if st.form_submit_button("Sign in", type="primary"):
                user = auth.sign_in(config, name, password)
                if user is None and (wait := auth.locked_for(name)):
                    st.error(f"Too many wrong passwords for this user name: try again in {math.ceil(wait / 60)} min.",
                             icon=":material/lock:")
                elif user is None:
                    st.error("Unknown user name or wrong password.", icon=":material/lock:")
                else:
                    st.session_state["auth_user"] = {"name": user.name, "role": user.role}
                    st.rerun()
    for provider in config.oidc_providers:
        label = f"Sign in with {provider}" if provider else "Sign in with your organisation's account"
        st.button(label, on_click=st.login, args=(provider,) if provider else (), key=f"auth_oidc_{provider}")


def _sign_out() -> None:
    """Forget the user and everything of their session (uploads, results, case code, records made), so the next
    person at this browser starts clean."""
    signed_in_here = "auth_user" in st.session_state
    st.session_state.clear()
    if not signed_in_here and st.user.is_logged_in:
        st.logout()


# --- case controls and recording ---------------------------------------------------------------------------------------
def case_controls() -> None:
    """The case code stored with each prediction, and whether the image itself is kept (app.py puts them at the top
    of the sidebar)."""
    st.text_input("Case code", key="case_code", max_chars=64, placeholder="e.g. IVF-2026-014",
                  help="Stored with every prediction you make, so you can find it again on the History page. "
                       "Use your clinic's pseudonymous code, not a patient's name.")
    st.checkbox("Keep images with the records", key="keep_image",
                help="Off: the image itself is not stored; its file name, fingerprint (sha256) and size are (so name "
                     "files by a code, not by the patient). On: the image is stored too, so the record and its "
                     "report show it.")


KEPT = object()  # record_prediction's case_code by default: the sidebar's


def record_prediction(prediction, task: str, image=None, whatif: dict | None = None, *, show: bool = True,
                      revises: str | None = None, case_code=KEPT) -> int | None:
    """Store a prediction in the case records once (reruns of the page do not duplicate it) and, with show, say so
    and offer its report. image: the input (InputImage or RGB array), kept only when "keep image" is ticked.
    revises: what the record is of (e.g. the image's sha256 and the model version), when the user can change the
    result in place (untick follicles, calibrate, re-time a sequence): one record per such key, revised as
    `prediction` changes.
    case_code: a code of its own (e.g. a batch's, given when it was scored), instead of the sidebar's.
    Returns the record id, or None when nothing was saved: an evaluation image opened from the Confusion page, or the
    database could not be written (a warning is shown; the page goes on)."""
    if is_handed(task):
        st.caption("An evaluation's image, opened from the Confusion matrices page: not saved to the case records.")
        return None
    fixed = case_code is not KEPT
    case_code = ((case_code if fixed else st.session_state.get("case_code")) or "").strip() or None
    keep = bool(st.session_state.get("keep_image"))
    user = current_user()
    pixels = getattr(image, "pixels", image)
    review = _fingerprint(prediction, task, whatif, user)
    key = review if revises is None else _fingerprint(revises, task, whatif, user)
    seen = st.session_state.setdefault("_recorded", {})
    # a code typed after the result fills it in; a record that has a code keeps it (the box now names the next case)
    code = seen[key][1] if key in seen and seen[key][1] else case_code
    try:
        if key not in seen:
            record_id = records.record(
                prediction, task=task, input_bytes=getattr(image, "n_bytes", None),
                input_size=(pixels.shape[1], pixels.shape[0]) if pixels is not None else None, case_code=code,
                user=user.name if user else None, whatif=whatif,
                image=encode_png(pixels) if keep and pixels is not None else None)
            seen[key] = (record_id, code, keep, review)
        elif seen[key][1:] != (code, keep, review):  # code typed, "keep" ticked or review changed since
            records.amend(seen[key][0], case_code=code,
                          image=records.UNCHANGED if seen[key][2] == keep else
                          encode_png(pixels) if keep and pixels is not None else None,
                          prediction=prediction if seen[key][3] != review else None)
            seen[key] = (seen[key][0], code, keep, review)
    except Exception as exc:  # noqa: BLE001 - a database problem must not take the result away
        st.warning(f"This result could not be saved to the case records ({type(exc).__name__}: {exc}).",
                   icon=":material/database:")
        return None
    record_id = seen[key][0]
    if show:
        st.caption(f"Saved as case record #{record_id}"
                   + (f" for case **{escape_markdown(code)}**" if code else " (no case code: set one in the sidebar)")
                   + (", image kept." if keep else ", image not stored."))
        if not fixed:
            move_notice([record_id])
        report_downloads(lambda: report.from_prediction(prediction, image=image, case_code=code,
                                                        user=user.name if user else None, whatif=whatif,
                                                        record_id=record_id),
                         key=f"record-{record_id}", stem=f"report-record-{record_id}")
    return record_id


def recorded_case(record_id: int) -> str | None:
    """The case code a record of this session was saved with."""
    return next((v[1] for v in st.session_state.get("_recorded", {}).values() if v[0] == record_id), None)


def _move_records(keys: list[str], case_code: str | None) -> None:
    seen = st.session_state["_recorded"]
    for key in keys:
        record_id, _, keep, review = seen[key]
        records.set_case_code(record_id, case_code)
        seen[key] = (record_id, case_code, keep, review)


def move_notice(record_ids: list[int]) -> None:
    """When the sidebar's code no longer names the case these records (one result, or a dish's embryos) were saved
    in: say so, and offer to move them."""
    box = (st.session_state.get("case_code") or "").strip() or None
    keys = [k for k, v in st.session_state.get("_recorded", {}).items() if v[0] in record_ids]
    if not keys or recorded_case(record_ids[0]) == box:
        return
    one = len(record_ids) == 1
    st.caption(f"The case code now reads **{escape_markdown(box) or '(empty)'}**: it applies to your next image; "
               + ("this record stays with its case." if one else "these records stay with their case."))
    st.button((f"Move record #{record_ids[0]}" if one else f"Move these {len(record_ids)} records") + " to "
              + (f"case {escape_markdown(box)}" if box else "no case"),
              key=f"move-{record_ids[0]}" + ("" if one else f"-{len(record_ids)}"), on_click=_move_records,
              args=(keys, box), icon=":material/drive_file_move:")


def earlier_review(input_sha256: str, model_id: str, version: str, objects: str, called: str = "reviewer",
                   matching: dict | None = None) -> records.Record | None:
    """The newest record this user may see of this very input by this model version in which the reviewer made calls
    on `objects` (rows with a `called` entry), made the same way (`matching`: results it must have, e.g. how the
    frames were read): to restore work lost to a reload. None when there is none or the database cannot be read."""
    try:
        found = records.query(input_sha256=input_sha256, model=model_id, viewer=current_user(), limit=50)
    except Exception:  # noqa: BLE001 - no earlier work to offer is no reason to fail the page
        return None
    return next((r for r in found if r.model_version == version
                 and all(r.summary.get(k) == v for k, v in (matching or {}).items())
                 and any(row.get(called) not in (None, "") for row in r.summary.get(objects) or [])), None)


def adopt(record: records.Record, task: str, revises: str) -> None:
    """Go on with an earlier record of this user (work restored after a reload): what record_prediction saves for
    `revises` from now on amends it, in its case, rather than making another; the record this session made of the
    same input moments before (all it holds is in the earlier one, or will be at the next save) is removed. Another
    user's record is left alone."""
    user = current_user()
    if record.username != (user.name if user else None):
        return
    key = _fingerprint(revises, task, None, user)
    seen = st.session_state.setdefault("_recorded", {})
    if key in seen and seen[key][0] != record.id:
        records.delete(seen[key][0])
    seen[key] = (record.id, record.case_code, bool(st.session_state.get("keep_image")), None)  # its image stays


def case_records(case_code: str, model_id: str, version: str, objects: str) -> list[records.Record]:
    """This case's records by this model version that the user may see and that hold `objects` (rows of results, e.g.
    a field's heads: not a pooled result), newest first and one per image. Empty when the database cannot be read."""
    try:
        found = records.query(case_code=case_code, model=model_id, viewer=current_user(), limit=1000)
    except Exception:  # noqa: BLE001 - a tally that cannot be read is left out, the page goes on
        return []
    newest: dict[str, records.Record] = {}
    for r in found:
        if r.case_code == case_code and r.model_id == model_id and r.model_version == version and objects in r.summary:
            newest.setdefault(r.input_sha256, r)
    return list(newest.values())


def report_downloads(make_report, key: str, stem: str) -> None:
    """HTML and PDF download buttons; make_report() builds the core.report.Report only when one is clicked."""
    cache: dict = {}

    def build():
        if "r" not in cache:
            cache["r"] = make_report()
        return cache["r"]

    left, right = st.columns(2)
    left.download_button("Report (PDF)", data=lambda: build().pdf(), file_name=f"{stem}.pdf",
                         mime="application/pdf", key=f"{key}-pdf", icon=":material/picture_as_pdf:",
                         on_click="ignore", width="stretch")
    right.download_button("Report (HTML)", data=lambda: build().html(), file_name=f"{stem}.html",
                          mime="text/html", key=f"{key}-html", icon=":material/description:", on_click="ignore",
                          width="stretch")


def _fingerprint(prediction, task, whatif, user) -> str:
    """prediction: a Prediction, or a key string standing for what a record is of."""
    summary = prediction if isinstance(prediction, str) else \
        {k: v for k, v in prediction.summary().items() if k != "timings_ms"}
    blob = json.dumps([task, summary, whatif, user.name if user else None], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
