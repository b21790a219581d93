"""Run model work in a thread and stream its progress to a Gradio generator handler; Stop within one network
evaluation.

    stops = Stops(); stops.guard(pipe.unet)          # once: a forward pre-hook checks the running session's flag
    for event in stops.run(session, work):           # work(report) runs in a thread; report(...) queues events
        ...                                          # yield previews to the browser as events arrive

Why a thread: a handler can only stream between its own yields, but previews come from inside the pipeline's
step callback. Why a forward pre-hook as well as the step callback: a step of Heun or DPM-2 is two network
evaluations, a diffusers scheduler step one; the hook stops before the next evaluation whatever the solver.
The flag is per browser session (its session hash), so one user's Stop never ends another user's run.
"""

from __future__ import annotations

import queue
import threading


class Stopped(Exception):
    """Raised inside the network call after Stop; the run ends, finished images are kept."""


class Stops:
    def __init__(self):
        self._flags: dict[str, threading.Event] = {}
        self._active: threading.Event | None = None  # the flag of the run on the model now (one at a time)
        self._lock = threading.Lock()

    def guard(self, module) -> None:
        """Check the active run's flag before each forward of `module` (the UNet)."""
        def hook(_module, _args):
            flag = self._active
            if flag is not None and flag.is_set():
                raise Stopped()
        module.register_forward_pre_hook(hook)

    def stop(self, session: str) -> None:
        with self._lock:
            flag = self._flags.get(session)
        if flag is not None:
            flag.set()

    def check(self, session: str) -> None:
        """Raise Stopped if `session` pressed Stop (call it from step callbacks)."""
        flag = self._flags.get(session)
        if flag is not None and flag.is_set():
            raise Stopped()

    def run(self, session: str, work):
        """Yield ("event", payload) items that work(report) reports, then ("stopped", None) or ("done", None).
        An exception other than Stopped is re-raised here, in the handler's thread."""
        flag = threading.Event()
        with self._lock:
            self._flags[session] = flag
        events: queue.Queue = queue.Queue()
        outcome: dict = {}

        def target():
            self._active = flag
            try:
                work(lambda *item: events.put(item))
            except Stopped:
                outcome["stopped"] = True
            except BaseException as e:  # noqa: BLE001  (handed to the handler's thread)
                outcome["error"] = e
            finally:
                self._active = None
                events.put(None)

        thread = threading.Thread(target=target, name=f"genkit-run-{session[:8]}", daemon=True)
        thread.start()
        try:
            while (item := events.get()) is not None:
                yield item
        finally:  # the handler was closed early (the client went away): stop the work too
            flag.set()
            thread.join()
            with self._lock:
                if self._flags.get(session) is flag:
                    del self._flags[session]
        if "error" in outcome:
            raise outcome["error"]
        yield ("stopped" if outcome.get("stopped") else "done", None)
