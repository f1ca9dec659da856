"""Every cuDNN engine for one FP32 forward convolution, through NVIDIA's cuDNN frontend (its Python
graph API, PyPI nvidia-cudnn-frontend): PyTorch exposes only its own choice, so the peer table can
list each algorithm with its workspace, and say where one does not apply.

Each engine the heuristics propose (modes A, B and the fallback list) is built on its own; one that
cannot run the problem is kept with the reason. The caller checks every engine's output against the
float64 oracle: an engine that computes in TF32 fails the FP32 bound and is reported as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


class CudnnFrontendUnavailable(RuntimeError):
    """The cuDNN frontend's Python package is not installed."""


@dataclass
class Engine:
    name: str  # cuDNN's plan name, e.g. eng0, eng1_k2=3
    workspace_bytes: int | None
    run: Callable[[], torch.Tensor] | None  # None: the engine cannot run this problem
    reason: str | None = None


def engines(
    x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int]
) -> list[Engine]:
    """The engines for conv2d(x, w) on CUDA float32 tensors (NCHW), each writing a new output."""
    try:
        import cudnn
    except ImportError as exc:
        raise CudnnFrontendUnavailable(
            "cuDNN's engines one by one need the cuDNN frontend: pip install nvidia-cudnn-frontend"
        ) from exc
    handle = cudnn.create_handle()
    fp32 = cudnn.data_type.FLOAT
    graph = cudnn.pygraph(
        io_data_type=fp32, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle
    )
    x, w = x.contiguous(), w.contiguous()
    tx = graph.tensor(name="X", dim=list(x.size()), stride=list(x.stride()), data_type=fp32)
    tw = graph.tensor(name="W", dim=list(w.size()), stride=list(w.stride()), data_type=fp32)
    ty = graph.conv_fprop(
        image=tx, weight=tw, padding=list(padding), stride=list(stride), dilation=[1, 1]
    )
    ty.set_output(True).set_data_type(fp32)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.B, cudnn.heur_mode.FALLBACK])
    y = torch.empty(ty.get_dim(), device=x.device).as_strided(ty.get_dim(), ty.get_stride())
    # One workspace for every engine, grown to the largest asked so far when an engine first runs
    # (not one each, allocated up front: at batch 128 an FFT engine's alone can take gigabytes).
    workspace = [torch.empty(1, device=x.device, dtype=torch.uint8)]
    out = []
    for i in range(graph.get_execution_plan_count()):
        name = graph.get_plan_name_at_index(i)
        try:
            graph.build_plan_at_index(i)
            ws = int(graph.get_workspace_size_plan_at_index(i))
        except Exception as exc:  # cudnn raises its own error types per failure
            out.append(Engine(name, None, None, str(exc).splitlines()[0][:200]))
            continue

        def run(i=i, ws=ws):
            if workspace[0].numel() < ws:
                workspace[0] = torch.empty(0, device=x.device, dtype=torch.uint8)  # free first
                workspace[0] = torch.empty(ws, device=x.device, dtype=torch.uint8)
            graph.execute_plan_at_index({tx: x, tw: w, ty: y}, workspace[0], index=i, handle=handle)
            return y

        out.append(Engine(name, ws, run))
    return out
