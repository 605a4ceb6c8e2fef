"""Admin routes (bearer token): list, load from the store, unload adapters at run time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from serve.api.deps import AdminDep, EngineDep, RegistryDep
from serve.api.errors import TGIRoute
from serve.api.schemas import Body
from serve.registry import describe

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep], route_class=TGIRoute)


class AdapterOut(Body):
    name: str
    parent: str
    path: str
    rank: int
    alpha: float
    target_modules: list[str]
    has_manifest: bool


class AdapterList(BaseModel):
    adapters: list[AdapterOut]
    failed: dict[str, str]  # store entries that were refused, with the reason
    resident: list[str]  # adapters held in engine slots now


class Unloaded(BaseModel):
    unloaded: str


@router.get("/adapters", response_model=AdapterList)
async def list_adapters(engine: EngineDep, registry: RegistryDep):
    """Loaded adapters, adapters the store holds but that were refused (with the reason), and slot use."""
    return {
        "adapters": [describe(w, engine.name) for _, w in sorted(engine.adapters().items())],
        "failed": registry.failed,
        "resident": engine.stats()["resident_adapters"],
    }


# What the store accepts as a name (common.adapter_store), said in the spec; the kit's own check answers otherwise.
AdapterName = Annotated[str, Path(json_schema_extra={"pattern": r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"})]


@router.post("/adapters/{name}", status_code=201, response_model=AdapterOut)
async def load_adapter(name: AdapterName, registry: RegistryDep):
    """Load (or reload) the adapter `name` from the adapter store; a refused one answers why."""
    return await registry.load(name)


@router.delete("/adapters/{name}", response_model=Unloaded)
async def unload_adapter(name: AdapterName, registry: RegistryDep):
    """Unload an adapter; requests already running with it finish with it."""
    await registry.unload(name)
    return {"unloaded": name}
