"""`supportkit train report`: one row per adapter in a store, from each adapter's manifest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from common.adapter_store import adapter_dirs
from common.manifest import read_manifest

COLUMNS = ("name", "r", "alpha", "modules", "lr", "epochs", "steps", "train_loss", "val_loss", "perplexity",
           "kwh", "energy_source", "co2_kg", "duration_s")


def collect(store: Path) -> list[dict]:
    """Rows for every sub-directory with a manifest (others are listed as such, not skipped silently)."""
    if not store.is_dir():
        raise FileNotFoundError(f"adapter store {store} does not exist")
    rows = []
    for path in adapter_dirs(store):
        try:
            m = read_manifest(path)
        except ValueError as exc:
            rows.append({"name": path.name, "error": str(exc)[:120]})
            continue
        if m is None:
            rows.append({"name": path.name, "error": "no manifest.json"})
            continue
        lora, tr, met, en = m.lora, m.training, m.metrics, m.energy
        rows.append({
            "name": m.name, "r": lora and lora.r, "alpha": lora and lora.alpha,
            "modules": lora and ",".join(x.removesuffix("_proj") for x in lora.target_modules),
            "lr": tr and tr.learning_rate, "epochs": tr and tr.epochs, "steps": tr and tr.steps,
            "train_loss": met and met.train_loss, "val_loss": met and met.val_loss, "perplexity": met and met.perplexity,
            "kwh": en and en.kwh.get("total"), "energy_source": en and en.sources.get("total"),
            "co2_kg": en and en.co2_kg, "duration_s": en and en.duration_s,
        })
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("name", "modules", "energy_source") else "right")
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], f"[yellow]{row['error']}[/]", *[""] * (len(COLUMNS) - 2))
        else:
            table.add_row(*(_fmt(row.get(c)) for c in COLUMNS))
    console = Console()
    if not console.is_terminal:  # piped to a file or a log: do not squeeze the table into 80 columns
        console = Console(width=240)
    console.print(table)


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*COLUMNS, "error"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def write_json(rows: list[dict], path: Path) -> None:
    path.write_text(json.dumps(rows, indent=2) + "\n")
