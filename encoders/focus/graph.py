"""Reading an ONNX graph: producer/consumer index, constants, and the walks the tracer needs."""
from __future__ import annotations

from collections import defaultdict, deque
from typing import Iterable

import numpy as np

from .source import FocusConversionError


class OnnxGraph:
    """Producer/consumer index over an ONNX graph plus constant lookup."""

    PASS_THROUGH = {"Reshape", "Transpose", "Cast", "Identity", "Resize", "Expand", "Unsqueeze",
                    "Squeeze", "Flatten", "Upsample"}

    def __init__(self, model):
        from onnx import numpy_helper
        self.model = model
        g = model.graph
        self.nodes = list(g.node)
        self.init = {t.name: t for t in g.initializer}
        self._arrays: dict[str, np.ndarray] = {}
        self._np = numpy_helper
        self.producer = {}
        self.consumers = defaultdict(list)
        for n in self.nodes:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.graph_inputs = [i.name for i in g.input if i.name not in self.init]

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = self._np.to_array(self.init[name])
        return self._arrays[name]

    def const(self, name: str) -> np.ndarray | None:
        """Value of an initializer or a Constant node's output, else None."""
        if name in self.init:
            return self.array(name)
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return self._np.to_array(a.t)
        return None

    def is_weight(self, name: str) -> bool:
        return name in self.init

    def weight_operand(self, node) -> tuple[str | None, str | None]:
        """(initializer input, other input) of a binary node, or (None, None)."""
        a, b = node.input[0], node.input[1]
        if self.is_weight(b) and not self.is_weight(a):
            return b, a
        if self.is_weight(a) and not self.is_weight(b):
            return a, b
        return None, None

    def only(self, nodes: list, what: str, where: str):
        if len(nodes) != 1:
            raise FocusConversionError(f"expected exactly one {what} at {where}, found {len(nodes)}: "
                                       f"{[n.name or n.op_type for n in nodes]}")
        return nodes[0]

    def cons(self, tensor: str, op: str | Iterable[str]) -> list:
        ops = {op} if isinstance(op, str) else set(op)
        return [n for n in self.consumers.get(tensor, []) if n.op_type in ops]

    def trace_up_to_initializer(self, tensor: str) -> tuple[str, list[str]]:
        """Follow data inputs (input 0) through reshaping ops until an initializer."""
        path = []
        t = tensor
        while t not in self.init:
            n = self.producer.get(t)
            if n is None or n.op_type not in self.PASS_THROUGH:
                raise FocusConversionError(
                    f"tensor '{tensor}' does not trace back to an initializer through "
                    f"{sorted(self.PASS_THROUGH)} (stopped at {n.op_type if n else 'a graph input'} "
                    f"'{n.name if n else t}')")
            path.append(n.op_type)
            t = n.input[0]
        return t, path

    def downstream(self, tensor: str, stop, max_nodes: int = 500) -> list[tuple[object, str]]:
        """BFS over consumers from ``tensor``; returns (node, input tensor it was reached by) for the
        first nodes matching ``stop(node)`` on each path (not expanded further)."""
        found, seen = [], set()
        q = deque([tensor])
        visited = 0
        while q:
            t = q.popleft()
            for n in self.consumers.get(t, []):
                key = (id(n), t)
                if key in seen:
                    continue
                seen.add(key)
                visited += 1
                if visited > max_nodes:
                    raise FocusConversionError(f"graph walk from '{tensor}' did not reach its target "
                                               f"within {max_nodes} nodes")
                if stop(n):
                    found.append((n, t))
                    continue
                if n.op_type == "Shape":                   # shape arithmetic is not data flow
                    continue
                for o in n.output:
                    q.append(o)
        return found

    def backward_slice_initializers(self, tensor: str) -> set[str]:
        out, seen = set(), set()
        stack = [tensor]
        while stack:
            t = stack.pop()
            if t in seen or not t:
                continue
            seen.add(t)
            if t in self.init:
                out.add(t)
                continue
            n = self.producer.get(t)
            if n is not None:
                stack.extend(n.input)
        return out
