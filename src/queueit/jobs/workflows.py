"""Workflows: pipelines (each step's result fed to the next) and groups (a callback once
every member has finished).

::

    app.pipeline(resize.s("cat.png", width=200), watermark.s(), upload.s(bucket="thumbs")).send()

runs ``resize("cat.png", width=200)``, then ``watermark(<its result>)``, then
``upload(<that result>, bucket="thumbs")``. The steps still to run travel in the envelope
(``then``: a list of ``{"job", "queue", "args", "kwargs"}``). When a step succeeds, the
worker sends the next one in the same broker step as the ack, so a pipeline never loses or
repeats a step between two jobs. A step that fails is retried as any job; one out of
retries stops the pipeline and is kept as a failed job *with the rest of the pipeline*:
retrying it (``queueit failed retry``) carries the pipeline on. Results must be JSON values.

Groups::

    app.group(resize.s("a.png"), resize.s("b.png")).then(notify.s(user_id)).send()

runs the members on any workers, in parallel; once every one has finished (done, or failed
out of retries) the broker releases the callback, which is called with the list of the
members' results first (in member order; None for a failed member), then its own arguments:
``notify([r_a, r_b], user_id)``. Each member's outcome is counted in the same broker step as
its job's ack, so a member delivered twice counts once and none is lost. If a member failed,
the callback is not run but kept as a failed job (``GroupFailed``, its results as they are),
unless ``then(..., allow_failures=True)``: then it runs with None for the failed ones.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ..transports import GroupOutcome, MemberReport, Outgoing, Unsupported
from ..transports.base import MAX_GROUP_SIZE, MAX_UNIQUE_KEY, QUEUE_NAME
from .arguments import to_json_value
from .envelope import MAX_JOB_NAME, Envelope, InvalidMessage
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
        envelope = _envelope(first)
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


#: The most steps a pipeline has after its first.
MAX_STEPS = 1_000


def check_workflow(envelope: Envelope) -> None:
    """Refuse a malformed ``then`` or ``group`` in an envelope from outside before its job
    runs, rather than after, when its next step or its member report could not be sent.

    Raises:
        InvalidMessage: what is wrong.
    """
    then = envelope.extra.get("then")
    if then is not None:
        if type(then) is not list or len(then) > MAX_STEPS:
            raise InvalidMessage(f"the envelope's 'then' must be a list of at most {MAX_STEPS} steps")
        for step in then:
            if not (
                type(step) is dict
                and type(job := step.get("job")) is str
                and 0 < len(job) <= MAX_JOB_NAME
                and type(queue := step.get("queue")) is str
                and QUEUE_NAME.fullmatch(queue)
                and type(step.get("args", [])) is list
                and type(step.get("kwargs", {})) is dict
            ):
                raise InvalidMessage(
                    'each step of the envelope\'s \'then\' must be {"job": a job name, "queue": a queue '
                    'name, "args": a list, "kwargs": an object}'
                )
    group = envelope.extra.get("group")
    if group is not None and not (
        type(group) is dict
        and type(group_id := group.get("id")) is str
        and 0 < len(group_id) <= MAX_UNIQUE_KEY
        and type(member := group.get("member")) is int
        and 0 <= member < MAX_GROUP_SIZE
    ):
        raise InvalidMessage(
            f'the envelope\'s \'group\' must be {{"id": 1-{MAX_UNIQUE_KEY} characters, "member": '
            f"0-{MAX_GROUP_SIZE - 1}}}"
        )


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


def _envelope(step: Step, extra: Mapping[str, Any] | None = None) -> Envelope:
    envelope = Envelope.new(
        step.job, step.queue, tuple(to_json_value(list(step.args))), to_json_value(dict(step.kwargs))
    )
    return replace(envelope, extra=dict(extra)) if extra else envelope


class GroupFailed(Exception):
    """Members of the callback's group failed (and ``allow_failures`` was not given)."""


class Group:
    """Members run in parallel; an optional callback runs once all have finished."""

    def __init__(self, app: App, members: Sequence[Step]) -> None:
        if not members:
            raise ValueError("a group needs at least one member")
        self.app = app
        self.members = list(members)
        self.callback: Step | None = None
        self.allow_failures = False

    def then(self, callback: Step, *, allow_failures: bool = False) -> Group:
        """Run ``callback`` with the members' results once every member has finished.

        Args:
            allow_failures: run it even if members failed (their results are None);
                otherwise it is kept as a failed job (``GroupFailed``).
        """
        self.app.check_step(callback, "group callback", fed=True)
        self.callback = callback
        self.allow_failures = allow_failures
        return self

    def send(self) -> str:
        """Send every member (and hold the callback on the broker); returns the group id."""
        return self.app.portal_call(self.asend())

    async def asend(self) -> str:
        group_id = uuid.uuid4().hex
        envelopes = [
            _envelope(step, {"group": {"id": group_id, "member": i}} if self.callback else None)
            for i, step in enumerate(self.members)
        ]
        if self.callback is None:  # members alone: one broker step, atomic where the transport's is
            handlers = self.app.handlers
            await self.app.publish_many(
                (e, handlers[step.job].options) for e, step in zip(envelopes, self.members, strict=True)
            )
            return group_id
        members = [(e.queue, _outgoing(e)) for e in envelopes]
        if not self.app.capabilities.groups:
            raise Unsupported(
                "this app's transport cannot hold a group's callback; use queueit:// or memory://"
            )
        callback = _envelope(self.callback, {"group_policy": {"allow_failures": self.allow_failures}})
        # One step on the broker, the held callback included: every hook before, every one after.
        for envelope in (*envelopes, callback):
            self.app._before_enqueue(envelope)
        await self.app.send_group(group_id, members, callback.queue, _outgoing(callback))
        for envelope in (*envelopes, callback):
            self.app._after_enqueue(envelope, None)
        return group_id


def _outgoing(envelope: Envelope) -> Outgoing:
    return Outgoing(envelope.encode(), {"job": envelope.job, "job-id": envelope.id})


def member_report(envelope: Envelope, outcome: Literal["done", "failed"], result: Any) -> MemberReport | None:
    """The report a group member's settle carries; None for a job in no group.

    A result that is no JSON value, or too large, is reported as None (the member is done all
    the same: its own job succeeded).
    """
    group = envelope.extra.get("group")
    if (
        not isinstance(group, dict)
        or not isinstance(group.get("id"), str)
        or not isinstance(group.get("member"), int)
    ):
        return None
    try:
        text = json.dumps(to_json_value(result), ensure_ascii=False).encode()
    except (TypeError, ValueError):
        text = b"null"
    try:
        return MemberReport(group["id"], group["member"], outcome, text)
    except ValueError:
        return MemberReport(group["id"], group["member"], outcome, b"null")


def with_group_results(envelope: Envelope, outcome: GroupOutcome) -> tuple[Envelope, list[int]]:
    """The callback's envelope with the members' results as its first argument, and the
    members that failed."""
    results: list[Any] = []
    failed = []
    for i, (state, result) in enumerate(outcome.members):
        if state != "done":
            failed.append(i)
        value = None
        if state == "done" and result is not None:
            try:
                value = json.loads(result)
            except ValueError:
                value = None
        results.append(value)
    extra = {k: v for k, v in envelope.extra.items() if k != "group_policy"}
    return replace(envelope, args=(results, *envelope.args), extra=extra), failed


def allows_failures(envelope: Envelope) -> bool:
    policy = envelope.extra.get("group_policy")
    return isinstance(policy, dict) and policy.get("allow_failures") is True
