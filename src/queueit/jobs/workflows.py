"""Pipelines: the talk's pipeline pattern, each step's result fed to the next.

::

    app.pipeline(resize.s("cat.png", width=200), watermark.s(), upload.s(bucket="thumbs")).send()

runs ``resize("cat.png", width=200)``, then ``watermark(<its result>)``, then
``upload(<that result>, bucket="thumbs")``. The steps still to run travel in the envelope
(``then``: a list of ``{"job", "queue", "args", "kwargs"}``). When a step succeeds, the
worker sends the next one in the same broker step as the ack, so a pipeline never loses or
repeats a step between two jobs. A step that fails is retried as any job; one out of
retries stops the pipeline and is kept as a failed job *with the rest of the pipeline*:
retrying it (``queueit failed retry``) carries the pipeline on. Results must be JSON values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .arguments import to_json_value
from .envelope import Envelope
from .options import SendOptions

if TYPE_CHECKING:
    from .app import App


@dataclass(frozen=True, slots=True)
class Step:
    """A job with some of its arguments (``job.s(...)``); a pipeline adds the previous result
    as the first positional argument."""

    job: str
    queue: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "queue": self.queue,
            "args": to_json_value(list(self.args)),
            "kwargs": to_json_value(dict(self.kwargs)),
        }


class Pipeline:
    """Steps run one after the other, each given the previous one's result."""

    def __init__(self, app: App, steps: Sequence[Step]) -> None:
        if not steps:
            raise ValueError("a pipeline needs at least one step")
        self.app = app
        self.steps = list(steps)

    def envelope(self) -> Envelope:
        first, rest = self.steps[0], self.steps[1:]
        envelope = Envelope.new(
            first.job, first.queue, tuple(to_json_value(list(first.args))), to_json_value(dict(first.kwargs))
        )
        if rest:
            envelope = replace(envelope, extra={"then": [s.to_json() for s in rest]})
        envelope.encode()  # raises TypeError now for an argument that is no JSON value
        return envelope

    def send(self) -> str:
        """Start the pipeline; returns the first step's job id."""
        handler = self.app.handlers[self.steps[0].job]
        return self.app.publish_envelope(self.envelope(), SendOptions(), handler.options)

    async def asend(self) -> str:
        handler = self.app.handlers[self.steps[0].job]
        return await self.app.apublish_envelope(self.envelope(), SendOptions(), handler.options)


def next_step(done: Envelope, result: Any) -> Envelope | None:
    """The envelope of the step after ``done``, fed ``result``; None at the end of a pipeline.

    Raises:
        TypeError: ``result`` is not a JSON value.
    """
    then = done.extra.get("then")
    if not isinstance(then, list) or not then or not isinstance(then[0], dict):
        return None
    step, rest = then[0], then[1:]
    envelope = Envelope.new(
        str(step.get("job", "")),
        str(step.get("queue", "")),
        (to_json_value(result), *step.get("args", [])),
        step.get("kwargs", {}),
        trace_id=done.trace_id,
    )
    if rest:
        envelope = replace(envelope, extra={"then": rest})
    envelope.encode()
    return envelope
