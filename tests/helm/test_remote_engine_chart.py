"""The chart's remote-engine values: the kit's server in front of a vLLM/TGI/LoRAX engine, given by URL or
deployed beside it with the base model and adapter store mounted at the same paths."""

import pytest

from tests.helm.conftest import CHART, by_kind, one, run

VLLM_BESIDE = ("serve.engine.kind=vllm", "serve.engine.deploy.enabled=true", "networkPolicy.enabled=true")


def serve_container(docs):
    return one(docs, "Deployment", "-serve")["spec"]["template"]["spec"]["containers"][0]


def env_of(container):
    return {e["name"]: e.get("value") for e in container["env"]}


def test_local_engine_by_default(chart):
    docs = chart.render()
    assert not [d for d in docs if d["metadata"]["name"].endswith("-engine")]
    c = serve_container(docs)
    assert "SUPPORTKIT_SERVE_ENGINE" not in env_of(c)
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"


def test_vllm_deployed_beside_the_kit(chart):
    docs = chart.render(sets=VLLM_BESIDE)
    serve = serve_container(docs)
    env = env_of(serve)
    assert env["SUPPORTKIT_SERVE_ENGINE"] == "vllm"
    assert env["SUPPORTKIT_SERVE_ENGINE_URL"] == "http://kit-supportkit-engine:8000/v1"
    # Readiness follows the engine; only the kit itself decides restarts (a loading engine never restarts it).
    assert serve["readinessProbe"]["httpGet"]["path"] == "/health"
    assert serve["startupProbe"]["httpGet"]["path"] == serve["livenessProbe"]["httpGet"]["path"] == "/metrics"

    engine_pod = one(docs, "Deployment", "-engine")["spec"]["template"]["spec"]
    engine = engine_pod["containers"][0]
    assert engine["image"].startswith("vllm/vllm-openai:")
    assert env_of(engine)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The adapter store and the model at the same paths in both pods: an adapter's path means the same.
    mounts = lambda c: {m["mountPath"]: m.get("readOnly", False) for m in c["volumeMounts"]}
    assert mounts(engine)["/adapters"] is True and mounts(serve)["/adapters"] is True
    assert "/models/base" in mounts(engine) and "/models/base" in mounts(serve)
    assert engine["securityContext"]["runAsNonRoot"] and engine["securityContext"]["readOnlyRootFilesystem"]
    assert one(docs, "Service", "-engine")["spec"]["ports"][0]["port"] == 8000

    policies = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "NetworkPolicy")}
    to_engine = [r for r in policies["kit-supportkit-serve"]["egress"]
                 if any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "engine"
                        for p in r.get("to", []))]
    assert to_engine and to_engine[0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    sources = policies["kit-supportkit-engine"]["ingress"][0]["from"]
    assert [s["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for s in sources] == ["serve"]


def test_external_tgi_by_url(chart):
    docs = chart.render(sets=("serve.engine.kind=tgi", "serve.engine.url=http://tgi.ml.svc:80",
                              "serve.engine.adapters=support-a\\,support-b",
                              "serve.engine.energyCounterUrl=http://dcgm.gpu.svc:9400/metrics"))
    assert not [d for d in docs if d["metadata"]["name"].endswith("-engine")]
    env = env_of(serve_container(docs))
    assert env["SUPPORTKIT_SERVE_ENGINE_URL"] == "http://tgi.ml.svc:80"
    assert env["SUPPORTKIT_SERVE_ENGINE_ADAPTERS"] == "support-a,support-b"
    assert env["SUPPORTKIT_SERVE_ENERGY_COUNTER_URL"] == "http://dcgm.gpu.svc:9400/metrics"


def test_remote_engine_needs_a_url_or_a_deployment(chart):
    proc = run([chart.helm, "template", "kit", CHART, "--set", "serve.engine.kind=vllm"])
    assert proc.returncode != 0 and "serve.engine.url" in proc.stderr


@pytest.mark.parametrize("kube", ["1.29.0", "1.35.0"])
def test_engine_manifests_validate(chart, tools, tmp_path, kube):
    out = tmp_path / "engine.yaml"
    out.write_text(chart.template_text(kube=kube, sets=VLLM_BESIDE))
    proc = run([tools / "venv" / "bin" / "kubernetes-validate", "--strict", "--quiet", "-k", kube, out])
    assert proc.returncode == 0, proc.stdout + proc.stderr
