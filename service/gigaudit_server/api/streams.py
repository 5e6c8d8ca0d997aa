"""Streaming calls, as a gRPC server interceptor: caps on concurrent streams and an idle timeout for uploads.

A stream holds one RPC thread for its whole life. At most ``max_streams`` client-streaming calls (uploads) and
``max_watches`` server-streaming calls (WatchOperation, Health/Watch) run at once, so the other threads stay free for
health checks and unary calls; one more is refused with RESOURCE_EXHAUSTED (reflection streams take no slot). A stream whose client sends no message for ``idle_timeout_s`` is ended with DEADLINE_EXCEEDED: its messages
are read by a helper thread and handed over one at a time, so the RPC thread waits for each with a timeout (at most
two messages are buffered).
"""
from __future__ import annotations

import queue
import threading

import grpc

from gigaudit_server.api import errors, interceptors

_END = object()
UNCAPPED_PREFIXES = ("/grpc.reflection.",)  # short-lived tool streams (grpcurl): idle timeout only, no slot


def upload_stream_limit(max_streams: int | None, max_workers: int) -> int:
    """``max_streams``, or half the RPC threads when unset (at least one)."""
    return max_streams if max_streams is not None else max(1, max_workers // 2)


def watch_stream_limit(max_watches: int | None, max_workers: int) -> int:
    """``max_watches``, or a quarter of the RPC threads when unset (at least one)."""
    return max_watches if max_watches is not None else max(1, max_workers // 4)


class StreamGuard(grpc.ServerInterceptor):
    """Caps concurrent client-streaming calls and ends the ones left idle."""

    def __init__(self, max_streams: int, idle_timeout_s: float, max_watches: int | None = None):
        max_watches = max_streams if max_watches is None else max_watches
        if max_streams < 1 or max_watches < 1 or idle_timeout_s <= 0:
            raise ValueError(f"max_streams and max_watches must be at least 1 and idle_timeout_s positive, got "
                             f"{max_streams}, {max_watches} and {idle_timeout_s}")
        self.max_streams, self.max_watches, self.idle_timeout_s = max_streams, max_watches, idle_timeout_s
        self._slots = threading.BoundedSemaphore(max_streams)
        self._watch_slots = threading.BoundedSemaphore(max_watches)

    @classmethod
    def from_settings(cls, settings) -> StreamGuard:
        return cls(upload_stream_limit(settings.max_upload_streams, settings.max_workers),
                   settings.stream_idle_timeout_s, watch_stream_limit(settings.max_watch_streams, settings.max_workers))

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.response_streaming and not handler.request_streaming:
            return self._capped_watch(handler, handler_call_details.method)
        if not handler.request_streaming:
            return handler
        method = handler_call_details.method
        capped = not method.startswith(UNCAPPED_PREFIXES)

        def enter(request_iterator, context) -> IdleTimeoutRequests:
            if capped and not self._slots.acquire(blocking=False):
                interceptors.abort(context, errors.resource_exhausted(
                    method, f"{self.max_streams} uploads are in progress, the most this server takes at once; "
                    "retry later"))
            return IdleTimeoutRequests(request_iterator, self.idle_timeout_s)

        def leave(requests: IdleTimeoutRequests) -> None:
            requests.close()
            if capped:
                self._slots.release()

        def around(behavior):
            def guarded(request_iterator, context):
                requests = enter(request_iterator, context)
                try:
                    return behavior(requests, context)
                except errors.ApiError as exc:  # a behaviour without handle_errors: still a clear status
                    interceptors.abort(context, exc)
                finally:
                    leave(requests)

            def guarded_stream(request_iterator, context):  # stream-stream: the slot lasts as long as the responses
                requests = enter(request_iterator, context)
                try:
                    yield from behavior(requests, context)
                except errors.ApiError as exc:
                    interceptors.abort(context, exc)
                finally:
                    leave(requests)

            return guarded_stream if handler.response_streaming else guarded
        return interceptors.wrap(handler, around)


    def _capped_watch(self, handler, method: str):
        """A server-streaming call that holds a watch slot while it streams."""
        def around(behavior):
            def guarded(request, context):
                if not self._watch_slots.acquire(blocking=False):
                    interceptors.abort(context, errors.resource_exhausted(
                        method, f"{self.max_watches} streams are open, the most this server serves at once; poll "
                        "with GetOperation or WaitOperation, or retry later"))
                try:
                    yield from behavior(request, context)
                finally:
                    self._watch_slots.release()
            return guarded
        return interceptors.wrap(handler, around)


class IdleTimeoutRequests:
    """The messages of ``requests``; DEADLINE_EXCEEDED (an ``ApiError``) when none arrives for ``timeout_s``."""

    def __init__(self, requests, timeout_s: float):
        self._requests, self.timeout_s = requests, timeout_s
        self._handed = queue.Queue(maxsize=1)
        self._closed = threading.Event()
        self._done = False
        self._reader = threading.Thread(target=self._read, name="upload-reader", daemon=True)
        self._reader.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        try:
            item = self._handed.get(timeout=self.timeout_s)
        except queue.Empty:
            self._done = True
            raise errors.ApiError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"no upload message arrived for {self.timeout_s:g} s; the stream was ended "
                                  "(send chunks without long pauses, or retry)") from None
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def close(self) -> None:
        """Stop reading (the reader thread ends once the call is over)."""
        self._done = True
        self._closed.set()

    def _read(self) -> None:
        try:
            for request in self._requests:
                if not self._hand(request):
                    return
            self._hand(_END)
        except Exception as exc:  # noqa: BLE001 - a cancelled call (grpc.RpcError): the handler sees it
            self._hand(exc)

    def _hand(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._handed.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False
