"""One model description for Python models: the architecture JSON of onebit's C++ side.

`describe(model)` traces a PyTorch module with torch.fx and writes the architecture that the C++
`onebit::serialize::build` reads ({"type": "Graph", "nodes": [{"name", "type", "options",
"inputs"}], "output"}; docs/graph.md). `summary` and `convert` hand that architecture and the
module's weights to the C++ library, which builds its own model from them and runs its own
summary and converter: Python adds no third walker over layers. `from_architecture` goes the
other way (e.g. for the zoo's models).

Supported: the layers of onebit.nn (quantized dense, 1-D/2-D, depthwise and separable
convolutions, BatchNorm, Quantizer, Add, Concat, Multiply, Slice, LearnableBias, BlurPool2d);
torch.nn's Linear, Conv1d/2d, BatchNorm1d/2d, MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool2d,
Flatten, ReLU, PReLU, Sigmoid, Hardtanh, Dropout, Softmax; and in forward code `x + y` (an Add
node), `x * s` (Multiply), `x[:, a:b]` (Slice), `torch.cat([...], 1)` (Concat),
`torch.flatten(x, 1)` / `x.flatten(1)`, `F.relu`. Containers (Sequential, your own modules) are
traced through.
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

def _ints(v, n=2):
    return [v] * n if isinstance(v, int) else [int(i) for i in v]


def _torch_conv(m):
    if m.padding_mode != "zeros":
        mode = {"reflect": "kReflect", "replicate": "kReplicate", "circular": "kCircular"}
        padding_mode = mode[m.padding_mode]
    else:
        padding_mode = "kZeros"
    n = len(m.kernel_size)
    padding = m.padding if isinstance(m.padding, str) else _ints(m.padding, n)
    return {"in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": _ints(m.kernel_size, n), "stride": _ints(m.stride, n),
            "padding": padding, "dilation": _ints(m.dilation, n), "groups": m.groups,
            "bias": m.bias is not None, "padding_mode": padding_mode}


def _build_torch_conv(cls):
    return lambda o: _make_torch_conv(cls, o)


def _make_torch_conv(cls, o):
    modes = {"kZeros": "zeros", "kReflect": "reflect", "kReplicate": "replicate",
             "kCircular": "circular"}
    return cls(o["in_channels"], o["out_channels"], o["kernel_size"],
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


def _pool_dims(m):
    return 1 if isinstance(m, (torch.nn.MaxPool1d, torch.nn.AvgPool1d)) else 2


def _maxpool(m):
    n = _pool_dims(m)
    stride = m.stride if m.stride is not None else m.kernel_size
    return {"kernel_size": _ints(m.kernel_size, n), "stride": _ints(stride, n),
            "padding": _ints(m.padding, n), "dilation": _ints(m.dilation, n),
            "ceil_mode": m.ceil_mode}


def _avgpool(m):
    n = _pool_dims(m)
    stride = m.stride if m.stride is not None else m.kernel_size
    out = {"kernel_size": _ints(m.kernel_size, n), "stride": _ints(stride, n),
           "padding": _ints(m.padding, n), "ceil_mode": m.ceil_mode,
           "count_include_pad": m.count_include_pad}
    if n == 2:
        out["divisor_override"] = m.divisor_override
    return out


def _build_prelu(num_parameters, init):
    m = torch.nn.PReLU(num_parameters, init)
    m.init = float(init)
    return m


def _build_maxpool(cls):
    return lambda o: cls(o["kernel_size"], stride=o.get("stride"), padding=o.get("padding", 0),
                         dilation=o.get("dilation", 1), ceil_mode=o.get("ceil_mode", False))


def _build_avgpool(cls):
    def build(o):
        kw = {}
        if cls is torch.nn.AvgPool2d:
            kw["divisor_override"] = o.get("divisor_override")
        elif o.get("divisor_override") is not None:
            raise ValueError("onebit: torch.AvgPool1d has no divisor_override")
        return cls(o["kernel_size"], stride=o.get("stride"), padding=o.get("padding", 0),
                   ceil_mode=o.get("ceil_mode", False),
                   count_include_pad=o.get("count_include_pad", True), **kw)
    return build


def _adaptive(m):
    size = m.output_size
    size = [size, size] if isinstance(size, int) or size is None else list(size)
    return {"output_size": size}


# class -> (kind name, options of a module); kind name -> module from options.
_ONEBIT_LAYERS = (obn.QuantDense, obn.QuantConv1d, obn.QuantConv2d, obn.QuantDepthwiseConv2d,
                  obn.QuantSeparableConv1d, obn.QuantSeparableConv2d, obn.BatchNorm,
                  obn.Quantizer, obn.Add, obn.Concat, obn.Multiply, obn.Slice,
                  obn.LearnableBias, obn.BlurPool2d)

_DESCRIBE = {
    **{cls: (cls.kind, lambda m: m.options()) for cls in _ONEBIT_LAYERS},
    torch.nn.Linear: ("torch.Linear", lambda m: {"in_features": m.in_features,
                                                "out_features": m.out_features,
                                                "bias": m.bias is not None}),
    torch.nn.Conv1d: ("torch.Conv1d", _torch_conv),
    torch.nn.Conv2d: ("torch.Conv2d", _torch_conv),
    torch.nn.BatchNorm1d: ("torch.BatchNorm1d", _bn),
    torch.nn.BatchNorm2d: ("torch.BatchNorm2d", _bn),
    torch.nn.MaxPool1d: ("torch.MaxPool1d", _maxpool),
    torch.nn.MaxPool2d: ("torch.MaxPool2d", _maxpool),
    torch.nn.AvgPool1d: ("torch.AvgPool1d", _avgpool),
    torch.nn.AvgPool2d: ("torch.AvgPool2d", _avgpool),
    torch.nn.AdaptiveAvgPool2d: ("torch.AdaptiveAvgPool2d", _adaptive),
    torch.nn.Flatten: ("torch.Flatten", lambda m: {"start_dim": m.start_dim,
                                                  "end_dim": m.end_dim}),
    torch.nn.ReLU: ("torch.ReLU", lambda m: {"inplace": m.inplace}),
    # PyTorch 1.13's PReLU does not keep `init` (2.x does); _build_prelu records it.
    torch.nn.PReLU: ("torch.PReLU", lambda m: {"num_parameters": m.num_parameters,
                                              "init": float(getattr(m, "init", 0.25))}),
    torch.nn.Sigmoid: ("torch.Sigmoid", lambda m: {}),
    torch.nn.Hardtanh: ("torch.Hardtanh", lambda m: {"min_val": m.min_val,
                                                    "max_val": m.max_val}),
    torch.nn.Dropout: ("torch.Dropout", lambda m: {"p": m.p, "inplace": m.inplace}),
    torch.nn.Softmax: ("torch.Softmax", lambda m: {"dim": m.dim}),
}

_BUILD = {
    **{cls.kind: cls.from_options for cls in _ONEBIT_LAYERS},
    "torch.Linear": lambda o: torch.nn.Linear(o["in_features"], o["out_features"],
                                              bias=o.get("bias", True)),
    "torch.Conv1d": _build_torch_conv(torch.nn.Conv1d),
    "torch.Conv2d": _build_torch_conv(torch.nn.Conv2d),
    "torch.BatchNorm1d": _build_bn(torch.nn.BatchNorm1d),
    "torch.BatchNorm2d": _build_bn(torch.nn.BatchNorm2d),
    "torch.MaxPool1d": _build_maxpool(torch.nn.MaxPool1d),
    "torch.MaxPool2d": _build_maxpool(torch.nn.MaxPool2d),
    "torch.AvgPool1d": _build_avgpool(torch.nn.AvgPool1d),
    "torch.AvgPool2d": _build_avgpool(torch.nn.AvgPool2d),
    "torch.AdaptiveAvgPool2d": lambda o: torch.nn.AdaptiveAvgPool2d(tuple(o["output_size"])),
    "torch.Flatten": lambda o: torch.nn.Flatten(o.get("start_dim", 1), o.get("end_dim", -1)),
    "torch.ReLU": lambda o: torch.nn.ReLU(o.get("inplace", False)),
    "torch.PReLU": lambda o: _build_prelu(o.get("num_parameters", 1), o.get("init", 0.25)),
    "torch.Sigmoid": lambda o: torch.nn.Sigmoid(),
    "torch.Hardtanh": lambda o: torch.nn.Hardtanh(o.get("min_val", -1.0), o.get("max_val", 1.0)),
    "torch.Dropout": lambda o: torch.nn.Dropout(o.get("p", 0.5), o.get("inplace", False)),
    "torch.Softmax": lambda o: torch.nn.Softmax(o["dim"]),
}

_MULTI_INPUT = {"Add", "Concat", "Multiply"}


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
    if t in (operator.mul, torch.mul) and len(args) == 2 and not kw:
        return "Multiply", {}, list(args)
    if t is operator.getitem and len(args) == 2:
        begin, end = _channel_slice(n, args[1])
        return "Slice", {"begin": begin, "end": end}, [args[0]]
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


def _channel_slice(n, index):
    """(begin, end) of `x[:, begin:end]`; anything else is a ValueError naming the node."""
    ok = (isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None) and
          isinstance(index[1], slice) and index[1].step in (None, 1) and
          isinstance(index[1].start, (int, type(None))) and isinstance(index[1].stop, int))
    if ok:
        begin = index[1].start or 0
        if 0 <= begin < index[1].stop:
            return begin, index[1].stop
    raise ValueError(f"onebit: node {n.name!r} indexes a tensor with {index!r}; only a channel "
                     "slice x[:, begin:end] (0 <= begin < end) has a onebit layer kind (Slice)")


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
