"""The adapter store: which adapter directories exist, loading and unloading them, watching for changes.

A directory is loaded only once its files have stayed unchanged across two scans (a copy in progress is never
loaded; the kit's own training renames complete directories into place). Names are checked against a strict
pattern and must resolve inside the store, so nothing outside it is ever read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from common.adapter_store import adapter_dirs
from serve.engine.adapter_files import check_name
from serve.engine.interface import Engine
from serve.errors import AdapterInvalid, AdapterNotFound, ServeError

log = logging.getLogger("supportkit.registry")


class AdapterRegistry:
    def __init__(self, engine: Engine, store: Path | None, metrics=None):
        self.engine = engine
        self.store = store.resolve() if store else None
        self.metrics = metrics
        self.failed: dict[str, str] = {}
        self._failed_sig: dict[str, tuple] = {}
        self._seen: dict[str, tuple] = {}
        self._loaded_sig: dict[str, tuple] = {}
        self._unloaded_sig: dict[str, tuple] = {}  # unloaded by an operator: stays so until the files change
        self._from_store: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def path_of(self, name: str) -> Path:
        """The store directory of `name`; refuses names and symlinks that would leave the store."""
        check_name(name)
        if name == self.engine.name:
            raise AdapterInvalid(f"adapter name {name!r} is the base model's name")
        if self.store is None:
            raise AdapterNotFound("no adapter store is configured")
        path = (self.store / name).resolve()
        if path.parent != self.store:
            raise AdapterInvalid(f"adapter {name!r} resolves outside the adapter store")
        if not path.is_dir():
            # No store path in the message: it reaches clients, and file-system layout is not theirs to know.
            raise AdapterNotFound(f"adapter {name!r} is not in the adapter store")
        return path

    @staticmethod
    def _signature(path: Path) -> tuple:
        return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()))

    def _candidates(self) -> dict[str, Path]:
        return {p.name: p for p in adapter_dirs(self.store)} if self.store else {}

    async def load(self, name: str) -> dict:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            path = self.path_of(name)
            started = time.perf_counter()
            try:
                weights = await asyncio.to_thread(self.engine.load_adapter, name, path)
            except ServeError as exc:
                self.failed[name] = exc.message
                self._failed_sig[name] = self._signature(path)
                if self.metrics:
                    self.metrics.adapter_load_failed()
                log.warning("adapter refused: %s", exc.message)
                raise
            self.failed.pop(name, None)
            self._unloaded_sig.pop(name, None)
            self._from_store.add(name)
            self._loaded_sig[name] = self._signature(path)
            if self.metrics:
                self.metrics.adapter_loaded(time.perf_counter() - started)
            log.info("adapter %s loaded from %s", name, path)
            return describe(weights, self.engine.name)

    async def unload(self, name: str) -> None:
        check_name(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            self.engine.unload_adapter(name)
            self._from_store.discard(name)
            if self.store and (self.store / name).is_dir():
                self._unloaded_sig[name] = self._signature(self.store / name)
            log.info("adapter %s unloaded", name)

    async def sync(self, initial: bool = False) -> None:
        """Load new or changed directories, unload those that disappeared from the store."""
        found = self._candidates()
        loaded = self.engine.adapters()
        for name, path in found.items():
            try:
                sig = self._signature(path)
            except OSError:
                continue
            stable = initial or self._seen.get(name) == sig
            self._seen[name] = sig
            if not stable or sig in (self._failed_sig.get(name), self._unloaded_sig.get(name)):
                continue
            if name in loaded and self._loaded_sig.get(name) == sig:
                continue
            try:
                await self.load(name)
            except ServeError:
                pass
        for name in list(self._from_store):
            if name not in found and name in loaded:
                await self.unload(name)
        for name in list(self.failed):
            if name not in found:
                self.failed.pop(name, None)
                self._failed_sig.pop(name, None)

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except Exception:
                log.exception("adapter store scan failed")


def describe(weights, base_name: str) -> dict:
    return {
        "name": weights.name, "parent": base_name, "path": str(weights.path), "rank": weights.rank,
        "alpha": weights.alpha, "target_modules": weights.target_modules,
        "has_manifest": weights.manifest is not None,
    }
