"""llama.cpp's RPC backend: models spread over several machines, behind Ollama >= 0.30.

``protocol`` (the wire format and a probe), ``endpoints`` (worker address lists), ``worker``
(running rpc-server on a worker), ``relay`` (the memory cap rpc-server lacks), ``head``
(checks and failure reports for ``ollamads serve --workers``). Which layers go where is the
plan's placement model (:mod:`ollamads.plan.placement`), or llama-server's own ``--fit``.
"""
