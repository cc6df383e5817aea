"""Which quant fits this machine, and how to offload it: from the model's own bytes.

* ``memory``    bytes per layer (attention / dense / shared expert vs routed experts), the
                embeddings and output head, the MLA KV cache, compute buffers;
* ``placement`` which bytes land on which device for an offload (llama.cpp's rules);
* ``recommend`` the offload that fits, and the settings for each way of running it;
* ``sources``   the tensor table from local files or the Hub's headers (Range requests);
* ``reference`` an estimate from the published size when no header was read;
* ``family``    the largest quant of a model that fits;
* ``speed``     decode tokens/s from the bytes each token reads and each device's bandwidth.
"""

from __future__ import annotations

from ollamads.plan.memory import LayerBytes, ModelMemory, ModelShape, kv_bytes, model_memory
from ollamads.plan.placement import DeviceLoad, Offload, device_loads, layer_devices
from ollamads.plan.recommend import Layout, Plan, PlanRequest, make_plan

__all__ = [
    "DeviceLoad",
    "LayerBytes",
    "Layout",
    "ModelMemory",
    "ModelShape",
    "Offload",
    "Plan",
    "PlanRequest",
    "device_loads",
    "kv_bytes",
    "layer_devices",
    "make_plan",
    "model_memory",
]
