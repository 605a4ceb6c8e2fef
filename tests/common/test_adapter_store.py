"""The adapter store's rule: build hidden, rename into place; readers never list a hidden directory."""

from common.adapter_store import adapter_dirs, is_published, publish, read_manifests, staging_dir, valid_name
from common.manifest import AdapterManifest, write_manifest


def test_staged_adapters_are_invisible_until_published(tmp_path):
    store = tmp_path / "store"
    stage = staging_dir(store, "support")
    stage.mkdir()
    write_manifest(stage, AdapterManifest(name="support"))
    assert adapter_dirs(store) == [] and read_manifests(store) == {} and not is_published(store, "support")
    publish(stage, store, "support")
    assert [p.name for p in adapter_dirs(store)] == ["support"] and is_published(store, "support")
    assert read_manifests(store)["support"].name == "support"


def test_republishing_replaces_the_old_adapter_whole(tmp_path):
    store = tmp_path / "store"
    for version in ("1", "2"):
        stage = staging_dir(store, "support")
        stage.mkdir()
        write_manifest(stage, AdapterManifest(name="support", version=version))
        publish(stage, store, "support")
    assert read_manifests(store)["support"].version == "2"
    assert [p.name for p in store.iterdir()] == ["support"]  # nothing left aside


def test_malformed_manifests_and_plain_directories_are_left_out(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{")
    (tmp_path / "foreign").mkdir()  # an adapter made by another tool: no manifest
    assert [p.name for p in adapter_dirs(tmp_path)] == ["bad", "foreign"] and read_manifests(tmp_path) == {}


def test_names_are_what_the_api_accepts():
    assert valid_name("r16-qkvo.v2") and not valid_name(".hidden") and not valid_name("a..b")
    assert not valid_name("x" * 65) and not valid_name("a/b")
