"""One model description for Python models: the architecture JSON of onebit's C++ side.

`describe(model)` traces a PyTorch module with torch.fx and writes the architecture that the C++
`onebit::serialize::build` reads ({"type": "Graph", "nodes": [{"name", "type", "options",
"inputs"}], "output"}; docs/graph.md). `summary` and `convert` hand that architecture and the
module's weights to the C++ library, which builds its own model from them and runs its own
summary and converter: Python adds no third walker over layers. `from_architecture` goes the
other way (e.g. for the zoo's models).

Supported: the layers of onebit.nn; torch.nn's Linear, Conv2d, BatchNorm1d/2d, MaxPool2d,
AvgPool2d, AdaptiveAvgPool2d, Flatten, ReLU, Sigmoid, Hardtanh, Dropout, Softmax; and in
forward code `x + y` (an Add node), `torch.cat([...], 1)` (Concat), `torch.flatten(x, 1)` /
`x.flatten(1)`, `F.relu`. Containers (Sequential, your own modules) are traced through.
Anything else raises ValueError naming the node.
"""

import json
import operator

import torch
import torch.fx
import torch.nn.functional as F

from onebit import nn as obn
from onebit._ops import ops

__all__ = ["describe", "from_architecture", "Graph", "summary", "convert", "state_of"]


# ---- layer kinds: one entry per kind, both directions ----------------------------------------

def _ints(v):
    return [v, v] if isinstance(v, int) else [int(i) for i in v]


def _torch_conv2d(m):
    if m.padding_mode != "zeros":
        mode = {"reflect": "kReflect", "replicate": "kReplicate", "circular": "kCircular"}
        padding_mode = mode[m.padding_mode]
    else:
        padding_mode = "kZeros"
    padding = m.padding if isinstance(m.padding, str) else _ints(m.padding)
    return {"in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": _ints(m.kernel_size), "stride": _ints(m.stride), "padding": padding,
            "dilation": _ints(m.dilation), "groups": m.groups, "bias": m.bias is not None,
            "padding_mode": padding_mode}


def _build_torch_conv2d(o):
    modes = {"kZeros": "zeros", "kReflect": "reflect", "kReplicate": "replicate",
             "kCircular": "circular"}
    return torch.nn.Conv2d(o["in_channels"], o["out_channels"], o["kernel_size"],
                           stride=o.get("stride", 1), padding=o.get("padding", 0),
                           dilation=o.get("dilation", 1), groups=o.get("groups", 1),
                           bias=o.get("bias", True),
                           padding_mode=modes[o.get("padding_mode", "kZeros")])


def _bn(m):
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum,
            "affine": m.affine, "track_running_stats": m.track_running_stats}


def _build_bn(cls):
    return lambda o: cls(o["num_features"], eps=o.get("eps", 1e-5),
                         momentum=o.get("momentum", 0.1), affine=o.get("affine", True),
                         track_running_stats=o.get("track_running_stats", True))


def _maxpool(m):
    stride = m.stride if m.stride is not None else m.kernel_size
    return {"kernel_size": _ints(m.kernel_size), "stride": _ints(stride),
            "padding": _ints(m.padding), "dilation": _ints(m.dilation), "ceil_mode": m.ceil_mode}


def _avgpool(m):
    stride = m.stride if m.stride is not None else m.kernel_size
    return {"kernel_size": _ints(m.kernel_size), "stride": _ints(stride),
            "padding": _ints(m.padding), "ceil_mode": m.ceil_mode,
            "count_include_pad": m.count_include_pad, "divisor_override": m.divisor_override}


def _adaptive(m):
    size = m.output_size
    size = [size, size] if isinstance(size, int) or size is None else list(size)
    return {"output_size": size}


# class -> (kind name, options of a module); kind name -> module from options.
_DESCRIBE = {
    obn.QuantDense: ("QuantDense", lambda m: m.options()),
    obn.QuantConv2d: ("QuantConv2d", lambda m: m.options()),
    obn.BatchNorm: ("BatchNorm", lambda m: m.options()),
    obn.Quantizer: ("Quantizer", lambda m: m.options()),
    obn.Add: ("Add", lambda m: {}),
    obn.Concat: ("Concat", lambda m: {}),
    torch.nn.Linear: ("torch.Linear", lambda m: {"in_features": m.in_features,
                                                "out_features": m.out_features,
                                                "bias": m.bias is not None}),
    torch.nn.Conv2d: ("torch.Conv2d", _torch_conv2d),
    torch.nn.BatchNorm1d: ("torch.BatchNorm1d", _bn),
    torch.nn.BatchNorm2d: ("torch.BatchNorm2d", _bn),
    torch.nn.MaxPool2d: ("torch.MaxPool2d", _maxpool),
    torch.nn.AvgPool2d: ("torch.AvgPool2d", _avgpool),
    torch.nn.AdaptiveAvgPool2d: ("torch.AdaptiveAvgPool2d", _adaptive),
    torch.nn.Flatten: ("torch.Flatten", lambda m: {"start_dim": m.start_dim,
                                                  "end_dim": m.end_dim}),
    torch.nn.ReLU: ("torch.ReLU", lambda m: {"inplace": m.inplace}),
    torch.nn.Sigmoid: ("torch.Sigmoid", lambda m: {}),
    torch.nn.Hardtanh: ("torch.Hardtanh", lambda m: {"min_val": m.min_val,
                                                    "max_val": m.max_val}),
    torch.nn.Dropout: ("torch.Dropout", lambda m: {"p": m.p, "inplace": m.inplace}),
    torch.nn.Softmax: ("torch.Softmax", lambda m: {"dim": m.dim}),
}

_BUILD = {
    "QuantDense": obn.QuantDense.from_options,
    "QuantConv2d": obn.QuantConv2d.from_options,
    "BatchNorm": obn.BatchNorm.from_options,
    "Quantizer": obn.Quantizer.from_options,
    "Add": obn.Add.from_options,
    "Concat": obn.Concat.from_options,
    "torch.Linear": lambda o: torch.nn.Linear(o["in_features"], o["out_features"],
                                              bias=o.get("bias", True)),
    "torch.Conv2d": _build_torch_conv2d,
    "torch.BatchNorm1d": _build_bn(torch.nn.BatchNorm1d),
    "torch.BatchNorm2d": _build_bn(torch.nn.BatchNorm2d),
    "torch.MaxPool2d": lambda o: torch.nn.MaxPool2d(
        o["kernel_size"], stride=o.get("stride"), padding=o.get("padding", 0),
        dilation=o.get("dilation", 1), ceil_mode=o.get("ceil_mode", False)),
    "torch.AvgPool2d": lambda o: torch.nn.AvgPool2d(
        o["kernel_size"], stride=o.get("stride"), padding=o.get("padding", 0),
        ceil_mode=o.get("ceil_mode", False), count_include_pad=o.get("count_include_pad", True),
        divisor_override=o.get("divisor_override")),
    "torch.AdaptiveAvgPool2d": lambda o: torch.nn.AdaptiveAvgPool2d(tuple(o["output_size"])),
    "torch.Flatten": lambda o: torch.nn.Flatten(o.get("start_dim", 1), o.get("end_dim", -1)),
    "torch.ReLU": lambda o: torch.nn.ReLU(o.get("inplace", False)),
    "torch.Sigmoid": lambda o: torch.nn.Sigmoid(),
    "torch.Hardtanh": lambda o: torch.nn.Hardtanh(o.get("min_val", -1.0), o.get("max_val", 1.0)),
    "torch.Dropout": lambda o: torch.nn.Dropout(o.get("p", 0.5), o.get("inplace", False)),
    "torch.Softmax": lambda o: torch.nn.Softmax(o["dim"]),
}

_MULTI_INPUT = {"Add", "Concat"}


class _Tracer(torch.fx.Tracer):
    """Every module of a known kind is one node; everything else is traced through."""

    def is_leaf_module(self, m, qualname):
        return type(m) in _DESCRIBE


# ---- Python model -> architecture ------------------------------------------------------------

def _unique(name, used):
    base = name.replace(".", "_") or "node"
    out, i = base, 1
    while out in used:
        out = f"{base}_{i}"
        i += 1
    used.add(out)
    return out


def _trace(model):
    """(architecture dict, {C++ tensor name: tensor}) of `model`."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # torch.fx's own errors (data-dependent control flow, ...)
        raise ValueError(f"onebit: cannot trace {type(model).__name__} with torch.fx: {e}") from e
    value = {}
    nodes, used, tensors = [], set(), {}
    output = None

    def inputs_of(n, args):
        ids = []
        for a in args:
            if not isinstance(a, torch.fx.Node) or a not in value:
                raise ValueError(f"onebit: node {n.name!r} ({n.op} {n.target}) takes {a!r}, "
                                 "which is not the output of a traced layer")
            ids.append(value[a])
        return ids

    def add(n, kind, options, ids, label):
        name = _unique(label, used)
        nodes.append({"name": name, "type": kind, "options": options, "inputs": ids})
        value[n] = len(nodes)
        return name

    for n in graph.nodes:
        if n.op == "placeholder":
            if value:
                raise ValueError(f"onebit: the model takes more than one input ({n.name!r}); "
                                 "onebit models have one")
            value[n] = 0
        elif n.op == "call_module":
            module = model.get_submodule(n.target)
            kind, options = _DESCRIBE[type(module)][0], _DESCRIBE[type(module)][1](module)
            args = n.args[0] if kind in _MULTI_INPUT else n.args
            if kind in _MULTI_INPUT and not isinstance(args, (list, tuple)):
                raise ValueError(f"onebit: {n.target} ({kind}) must be called on a list")
            if kind not in _MULTI_INPUT and (len(n.args) != 1 or n.kwargs):
                raise ValueError(f"onebit: {n.target} ({kind}) must be called on one tensor")
            name = add(n, kind, options, inputs_of(n, args), n.target)
            for pname, t in list(module.named_parameters(recurse=False)) + \
                    list(module.named_buffers(recurse=False)):
                if t is not None:
                    tensors[f"{name}.{pname}"] = t
        elif n.op in ("call_function", "call_method"):
            kind, options, args = _function_node(n)
            add(n, kind, options, inputs_of(n, args), n.name)
        elif n.op == "output":
            if not isinstance(n.args[0], torch.fx.Node) or n.args[0] not in value:
                raise ValueError("onebit: the model must return one tensor")
            output = value[n.args[0]]
        else:
            raise ValueError(f"onebit: node {n.name!r} ({n.op} {n.target}) is not supported: "
                             "only layers of known kinds, +, torch.cat and flatten "
                             "(see onebit.graph)")
    return {"type": "Graph", "nodes": nodes, "output": output}, tensors


def _function_node(n):
    t, args, kw = n.target, n.args, n.kwargs
    if t in (operator.add, torch.add) and len(args) == 2 and not kw:
        return "Add", {}, list(args)
    if t is torch.cat:
        dim = args[1] if len(args) > 1 else kw.get("dim", 0)
        if dim != 1:
            raise ValueError(f"onebit: {n.name}: torch.cat must join channels (dim 1), got {dim}")
        return "Concat", {}, list(args[0])
    if t in (torch.flatten, "flatten"):
        start = args[1] if len(args) > 1 else kw.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kw.get("end_dim", -1)
        return "torch.Flatten", {"start_dim": start, "end_dim": end}, [args[0]]
    if t in (F.relu, torch.relu, "relu") and len(args) == 1:
        return "torch.ReLU", {"inplace": False}, [args[0]]
    raise ValueError(f"onebit: node {n.name!r} calls {getattr(t, '__name__', t)}, which has no "
                     "onebit layer kind; use a layer of onebit.nn or torch.nn (see onebit.graph)")


def describe(model):
    """The architecture of `model` as onebit's C++ side describes it (a dict)."""
    return _trace(model)[0]


def state_of(model):
    """{C++ parameter or buffer name: tensor} of `model` (names of `describe`'s nodes)."""
    return _trace(model)[1]


# ---- architecture -> Python model ------------------------------------------------------------

class Graph(torch.nn.Module):
    """A model built from an architecture (see `from_architecture`): one submodule per node,
    named like the node, run in order. Traced by torch.fx like any module."""

    def __init__(self, architecture):
        super().__init__()
        if architecture.get("type") == "Sequential":
            layers = architecture["layers"]
            architecture = {"type": "Graph", "output": len(layers),
                            "nodes": [dict(l, inputs=[i]) for i, l in enumerate(layers)]}
        if architecture.get("type") != "Graph":
            raise ValueError(f"onebit: an architecture has type 'Graph', got "
                             f"{architecture.get('type')!r}")
        self._inputs, self._names = [], []
        for i, node in enumerate(architecture["nodes"]):
            kind = node["type"]
            if kind == "Graph":
                module = Graph(node["options"])
            elif kind in _BUILD:
                module = _BUILD[kind](node["options"])
            else:
                raise ValueError(f"onebit: node {node['name']!r} is a {kind}, which the Python "
                                 f"package cannot build (known: {', '.join(sorted(_BUILD))})")
            self.add_module(node["name"], module)
            self._names.append(node["name"])
            self._inputs.append((list(node["inputs"]), kind in _MULTI_INPUT))
        out = architecture.get("output", -1)
        self._output = len(self._names) if out is None or out < 0 else out

    def forward(self, x):
        values = [x]
        for name, (ids, multi) in zip(self._names, self._inputs):
            module = getattr(self, name)
            values.append(module([values[i] for i in ids]) if multi else module(values[ids[0]]))
        return values[self._output]


def from_architecture(architecture):
    """A trainable PyTorch model (a `Graph`) from an architecture dict or JSON string (fresh
    weights)."""
    if isinstance(architecture, str):
        architecture = json.loads(architecture)
    return Graph(architecture)


# ---- passes of the C++ library ---------------------------------------------------------------

def _shape(input_shape):
    shape = [int(d) for d in input_shape]
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"onebit: input_shape must be positive sizes of one image (C, H, W), "
                         f"got {tuple(input_shape)}")
    return shape


def _cpp_args(model):
    arch, tensors = _trace(model)
    names = list(tensors)
    values = [tensors[k].detach().to(torch.float32).contiguous() for k in names]
    return json.dumps(arch), names, values


def summary(model, input_shape, name="sequential", print_fn=print, include_macs=True):
    """Prints Larq's summary table of `model` for inputs of shape `input_shape` (one image),
    computed by onebit's C++ summary (the table of `onebit summary`), and returns its numbers
    as a dict (the CLI's --json)."""
    arch, names, values = _cpp_args(model)
    text, numbers = ops.summary(arch, _shape(input_shape), name, names, values, include_macs)
    if print_fn is not None:
        print_fn(text.rstrip("\n"))
    return json.loads(numbers)


def convert(model, input_shape, path, model_name=""):
    """Converts `model` (its eval-mode function) to a `.obnn` file for onebit.runtime, with
    onebit's C++ converter; returns what the file stores (a dict: path, file_bytes,
    binary_weights, ...)."""
    arch, names, values = _cpp_args(model)
    return json.loads(ops.convert(arch, _shape(input_shape), str(path), names, values,
                                  model_name))
