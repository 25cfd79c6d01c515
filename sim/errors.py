"""Where vLLM itself stops: the simulation raises these instead of carrying on.

vLLM v0.5.5 aborts the engine when a swap victim does not fit in the CPU swap space, and
trips an assertion when it is asked to recompute a group with several running sequences, or
to schedule as a prompt a group that has several sequences (a sampling group recomputed after
its other samples finished, whose first sequence is the one that waited). The
simulation raises `EngineStopped` subclasses with vLLM's message (and what led to it), so a
trace can end on an explained final frame instead of a silently wrong state.
"""
from __future__ import annotations


class EngineStopped(RuntimeError):
    """vLLM would stop here (an abort or an assertion); the message says why."""


class SwapSpaceError(EngineStopped):
    """vLLM aborts the whole engine when a victim does not fit in the CPU swap space."""


class RecomputeAssertionError(EngineStopped):
    """vLLM asserts that a group preempted by recompute has one running sequence
    (`_preempt_by_recompute`) and that a group it sends as a prompt has one sequence
    (`Scheduler.schedule`); the message quotes the assertion."""
