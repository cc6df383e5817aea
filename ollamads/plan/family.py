"""Every quant of a model against one machine: which fit, and the largest that does.

Quants whose headers were read before (by ``plan`` or ``pull``) are counted exactly; the others
from their published size (:mod:`ollamads.plan.reference`). Nothing here uses the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from ollamads.catalog import CatalogEntry, CatalogModel
from ollamads.errors import OllamadsError
from ollamads.hardware import Machine
from ollamads.plan.recommend import Plan, PlanRequest, fits_machine, make_plan
from ollamads.plan.sources import ModelSource, offline_source


@dataclass(frozen=True)
class QuantFit:
    entry: CatalogEntry
    #: None when neither a header nor a published size is known.
    plan: Plan | None

    @property
    def fits(self) -> bool | None:
        return None if self.plan is None else fits_machine(self.plan.fit)

    @property
    def exact(self) -> bool:
        return self.plan is not None and self.plan.memory.exact


def plan_entry(entry: CatalogEntry, machine: Machine, request: PlanRequest,
               source: ModelSource | None = None) -> Plan | None:
    """The plan of one catalog quant from what is on disk (or ``source``); None if unknown."""
    source = source or offline_source(entry)
    if source is None:
        return None
    ctx = min(request.ctx, source.memory.shape.n_ctx_train)
    try:
        return make_plan(source.memory, machine, PlanRequest(
            ctx, request.kv_type, request.line, request.n_ubatch, request.gpu_reserve,
            request.ram_reserve,
        ), model_path=str(source.model_path), sampling=entry.parameters)
    except OllamadsError:
        return None


def family_fits(model: CatalogModel, machine: Machine, request: PlanRequest,
                known: dict[str, ModelSource] | None = None) -> list[QuantFit]:
    """One :class:`QuantFit` per quant of ``model``, in catalog order."""
    known = known or {}
    fits = []
    for quant in model.quants:
        entry = CatalogEntry(model, quant)
        fits.append(QuantFit(entry, plan_entry(entry, machine, request, known.get(entry.spec))))
    return fits


def largest_fitting(fits: list[QuantFit]) -> QuantFit | None:
    """The quant with the most bytes that still runs from memory (not from disk)."""
    weighed = [(f.plan.memory.weights, f) for f in fits if f.fits and f.plan is not None]
    return max(weighed, key=lambda pair: pair[0])[1] if weighed else None


__all__ = ["QuantFit", "family_fits", "largest_fitting", "plan_entry"]
