"""A trace of what the app server's pages read and decide, for diagnosing the Train page (issue 17).

Not part of the app: bench/click_to_accuracy.py --trace FILE starts the server with this folder first on
PYTHONPATH and HYBRID_LAB_TRACE=FILE, so Python imports this module at start-up. In the server process only
(the workers inherit the variable but are left alone), it appends one JSON line to FILE for:

- every run folder read through the store (core.store.read_run): the run, the state the store made of it, its
  message and step;
- every fragment a page declares (st.fragment): the function, its arguments and its run_every;
- every script run that starts: full or fragment (which), and the query string it runs with;
- every rerun request (st.rerun and the browser's, including the fragment timer's), as Streamlit queues it;
- the buttons pressed in each rerun request (their widget ids), and at each script run's start, whether the
  session still knows each pressed button (its callback runs only if it does, and is not disabled);
- every Stop that reaches core.service.stop, and its refusal if it is refused;
- every message big enough for the browser's message cache: its hash, and whether it went as a reference to
  a copy the browser said it had (the request that started the script run lists those).

Each line says which script run (a counter) it belongs to, and when (time.time()).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

TRACE = os.environ.get("HYBRID_LAB_TRACE")


def _install(path: str) -> None:
    import streamlit
    from streamlit.runtime.scriptrunner_utils.script_run_context import ScriptRunContext, get_script_run_ctx
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequests

    import core.store

    lock = threading.Lock()
    counter = {"run": 0}
    local = threading.local()

    def write(event: str, **values) -> None:
        ctx = get_script_run_ctx(suppress_warning=True)
        line = {"t": round(time.time(), 4), "event": event, "script_run": getattr(local, "run", None),
                "fragment_run": bool(ctx and ctx.fragment_ids_this_run), **values}
        with lock, open(path, "a") as handle:
            handle.write(json.dumps(line) + "\n")

    original_read_run = core.store.read_run

    def read_run(folder):
        run = original_read_run(folder)
        if get_script_run_ctx(suppress_warning=True) is not None:  # a page's read, not TensorBoard's
            write("read_run", run=run.run_id, state=str(run.state), message=run.message,
                  step=run.status.step if run.status else None)
        return run

    core.store.read_run = read_run

    original_fragment = streamlit.fragment

    def fragment(func=None, *, run_every=None, **options):
        if func is None:  # st.fragment(run_every=...)(function), as the pages call it
            return lambda function: fragment(function, run_every=run_every, **options)
        declared = original_fragment(func, run_every=run_every, **options)

        def traced(*args, **kwargs):
            write("fragment", function=func.__name__, args=[str(arg) for arg in args], run_every=run_every)
            return declared(*args, **kwargs)

        return traced

    streamlit.fragment = fragment

    original_reset = ScriptRunContext.reset

    def reset(self, query_string="", page_script_hash="", fragment_ids_this_run=None, *args, **kwargs):
        counter["run"] += 1
        local.run = counter["run"]
        result = original_reset(self, query_string, page_script_hash, fragment_ids_this_run, *args, **kwargs)
        write("script_start", kind="fragment" if fragment_ids_this_run else "full", query=query_string)
        return result

    ScriptRunContext.reset = reset

    original_request = ScriptRequests._request_rerun_locked

    def request_rerun(self, new_data):
        before = self._state.value
        accepted = original_request(self, new_data)
        write("rerun_request", state_before=before, query=new_data.query_string,
              fragment=bool(new_data.fragment_id or new_data.fragment_id_queue), auto=new_data.is_auto_rerun,
              from_script=threading.current_thread().name.startswith("ScriptRunner"),
              queued_query=self._rerun_data.query_string,
              queued_fragments=len(self._rerun_data.fragment_id_queue), accepted=accepted,
              triggers=_triggers(new_data.widget_states), queued_triggers=_triggers(self._rerun_data.widget_states))
        return accepted

    ScriptRequests._request_rerun_locked = request_rerun

    from streamlit.runtime.state.session_state import SessionState

    original_will_rerun = SessionState.on_script_will_rerun

    def on_script_will_rerun(self, fresh_widget_states, **kwargs):
        known = {}
        for wid in _triggers(fresh_widget_states):
            metadata = self._new_widget_state.widget_metadata.get(wid)
            known[wid] = None if metadata is None else {"disabled": metadata.disabled,
                                                       "callback": getattr(metadata.callback, "__name__", None)}
        write("will_rerun", triggers=known)
        return original_will_rerun(self, fresh_widget_states, **kwargs)

    SessionState.on_script_will_rerun = on_script_will_rerun

    import core.service

    original_stop = core.service.stop

    def stop(run, identity):
        write("service_stop", run=run.run_id, state=str(run.state))
        try:
            return original_stop(run, identity)
        except Exception as error:
            write("service_stop_refused", error=repr(error))
            raise

    core.service.stop = stop

    original_enqueue = ScriptRunContext.enqueue

    def enqueue(self, msg):
        original_enqueue(self, msg)
        if msg.metadata.cacheable and msg.hash:  # populated by the original: big enough for the browser's cache
            write("cacheable", hash=msg.hash, bytes=msg.ByteSize(), as_reference=msg.hash in self.cached_message_hashes,
                  path=list(msg.metadata.delta_path), known=len(self.cached_message_hashes))

    ScriptRunContext.enqueue = enqueue


def _triggers(states) -> list[str]:
    """The ids of the buttons whose press `states` carries."""
    return [w.id for w in (states.widgets if states else []) if w.WhichOneof("value") == "trigger_value"
            and w.trigger_value]


# At start-up sys.argv is ["-m", "run", "app.py", ...] for the server and ["-m", "--serve", ...] for a worker.
if TRACE and "app.py" in sys.argv:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for core.store
    _install(TRACE)
