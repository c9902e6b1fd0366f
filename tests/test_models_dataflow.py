"""dropblock.models.dataflow: the glue's dataflow graph, and which saved maps a value needs."""

import gc
import weakref

import torch
from torch import nn

from dropblock.models.dataflow import Flow, Node, needed
from dropblock.models.trace import Call


def _call(name):
    return Call(name, nn.Identity(), 0, None)


def test_flow_logs_what_glue_makes_and_reads():
    a, b = _call("a"), _call("b")
    x, y, free = torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3)
    flow = Flow()
    flow.made(x, Node((), a))
    flow.made((y, [y]), Node((), b))
    flow.on()
    try:
        s = x + y
        t = free * 2  # made from no recorded value: exact in any rerun, so not logged
        _ = s.shape, s.size(0), s.ndim, s.dtype, s.is_contiguous()  # metadata: no root
        assert flow.roots == []
        if (s > 0).all():  # a value read as a number
            pass
        s.mul_(2)  # a write in place
    finally:
        flow.off()
    assert flow.node(t) is None and flow.node(free) is None
    assert {n.call for n in flow.node(s).inputs[0].inputs} == {a, b}  # s after mul_: from s before
    assert len(flow.roots) == 2
    assert id(x) in flow.read and id(free) in flow.read
    u = x * 3  # the mode is off: nothing logged
    assert flow.node(u) is None


def test_flow_holds_no_tensor():
    flow = Flow()
    x = torch.ones(3)
    ref = weakref.ref(x)
    flow.made(x, Node((), _call("a")))
    assert list(flow.alive())
    del x
    gc.collect()
    assert ref() is None and not list(flow.alive())


def test_needed_follows_glue_and_calls_that_run_again():
    saved, lost, runs = _call("saved"), _call("lost"), _call("runs")
    from_saved, from_lost = Node((), saved), Node((), lost)
    glue = Node((from_saved,))
    assert needed([glue], {saved}, {lost}) == {saved}
    assert needed([Node((glue, from_lost))], {saved}, {lost}) is None
    rerun = Node((from_lost,), runs)  # a call that runs again computes from its arguments
    assert needed([rerun], {saved}, {lost}) is None
    assert needed([Node((Node((from_saved,), runs),))], {saved}, {lost}) == {saved}
    assert needed([], {saved}, {lost}) == set()
