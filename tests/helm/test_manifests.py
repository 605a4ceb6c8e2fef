"""What the rendered chart promises: probes, restricted security, GPUs, Indexed Job wiring, policies, secrets."""

import base64

import pytest

from tests.helm.conftest import by_kind, one


def pod_specs(docs):
    """(name, pod spec) of every workload, CronJob included."""
    out = []
    for d in docs:
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "Job"):
            out.append((d["metadata"]["name"], spec["template"]["spec"]))
        elif d["kind"] == "CronJob":
            out.append((d["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]))
    return out


def container(docs, kind, suffix):
    d = one(docs, kind, suffix)
    spec = d["spec"]["template"]["spec"] if kind != "CronJob" else d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


@pytest.fixture(scope="module")
def default(chart):
    return chart.render()


@pytest.fixture(scope="module")
def full(chart):
    return chart.render("full", monitoring_api=True)


@pytest.fixture(scope="module")
def gpu(chart):
    return chart.render("gpu")


def test_serve_probes_sized_for_a_slow_model_load(default):
    _, c = container(default, "Deployment", "-serve")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # a 3B model may take minutes to load
    # Liveness waits for the startup probe, so a long load never restarts the pod.
    assert "initialDelaySeconds" not in c["livenessProbe"]


def test_serve_args_and_env(default):
    _, c = container(default, "Deployment", "-serve")
    assert c["command"] == ["supportkit", "serve"]
    assert {"--model=/models/base", "--adapters=/adapters", "--host=0.0.0.0", "--port=8000"} <= set(c["args"])
    env = {e["name"]: e for e in c["env"]}
    assert env["SUPPORTKIT_CACHE"]["value"] == "/cache"
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models/base"]["readOnly"] and mounts["/adapters"]["readOnly"]
    assert {"/cache", "/tmp", "/dev/shm", "/data"} <= set(mounts)
    assert env["SUPPORTKIT_SERVE_FEEDBACK_DB"]["value"].startswith("/data/")


@pytest.mark.parametrize("values", ["default", "full", "gpu"])
def test_every_pod_is_restricted(chart, values):
    docs = chart.render() if values == "default" else chart.render(values)
    specs = pod_specs(docs)
    assert specs
    for name, spec in specs:
        assert spec["automountServiceAccountToken"] is False, name
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] and psc["runAsUser"] != 0 and psc["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["runAsNonRoot"] is True, name
            assert not sc.get("privileged"), name
            assert "limits" in c["resources"] and "memory" in c["resources"]["limits"], name
            # A read-only root needs somewhere to write: /tmp is always a volume.
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, name
        assert "hostNetwork" not in spec and "hostPID" not in spec, name


def test_service_account_does_not_mount_a_token(default):
    sa = one(default, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


def test_shm_is_memory_backed(default):
    spec, _ = container(default, "Deployment", "-serve")
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_gpu_requests_and_runtime_class(gpu, default):
    spec, c = container(gpu, "Deployment", "-serve")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    model = next(v for v in spec["volumes"] if v["name"] == "model")
    assert model["hostPath"] == {"path": "/var/lib/supportkit/models", "type": "Directory"}
    tspec, tc = container(gpu, "Job", "-train-r1")
    assert tc["resources"]["limits"]["nvidia.com/gpu"] == 1 and tspec["runtimeClassName"] == "nvidia"
    # CPU by default: no GPU resource, no runtime class.
    spec, c = container(default, "Deployment", "-serve")
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "runtimeClassName" not in spec


def test_custom_gpu_resource_name(chart):
    docs = chart.render(sets=("serve.gpu.enabled=true", "serve.gpu.resourceName=nvidia.com/mig-1g.10gb", "serve.gpu.count=2"))
    _, c = container(docs, "Deployment", "-serve")
    assert c["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == 2


def test_train_is_an_indexed_job_over_the_sweep(gpu, full):
    job = one(gpu, "Job", "-train-r1")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 16 and spec["parallelism"] == 4
    assert spec["backoffLimitPerIndex"] == 1
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    c = pod["containers"][0]
    assert c["command"] == ["supportkit", "train", "run"]
    assert "--index=$(JOB_COMPLETION_INDEX)" in c["args"] and "--out=/adapters" in c["args"]
    assert {"model=/models/base", "data=/data"} <= set(c["args"])  # overrides: model volume, data claim
    env = {e["name"]: e for e in c["env"]}
    # $(JOB_COMPLETION_INDEX) expands only from a declared variable: declared from the Job's index annotation.
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert not mounts["/adapters"].get("readOnly")  # training writes the adapter store
    adapters = next(v for v in pod["volumes"] if v["name"] == "adapters")
    serve_spec, _ = container(gpu, "Deployment", "-serve")
    serve_adapters = next(v for v in serve_spec["volumes"] if v["name"] == "adapters")
    assert adapters["persistentVolumeClaim"]["claimName"] == serve_adapters["persistentVolumeClaim"]["claimName"]
    assert "--config=/opt/supportkit/configs/train/sweep.yaml" in c["args"]  # the sweep inside the image
    # A sweep given in values is mounted from a ConfigMap and completions follow the values.
    fjob = one(full, "Job", "-train-r1")
    fc = fjob["spec"]["template"]["spec"]["containers"][0]
    assert "--config=/configs/sweep.yaml" in fc["args"] and fjob["spec"]["completions"] == 2
    assert "runs:" in one(full, "ConfigMap", "-sweep")["data"]["sweep.yaml"]
    assert "data=/data" not in fc["args"] and "/data" not in {m["mountPath"] for m in fc["volumeMounts"]}


def test_backoff_limit_per_index_only_where_supported(chart):
    old = one(chart.render("gpu", kube="1.28.0"), "Job", "-train-r1")
    assert "backoffLimitPerIndex" not in old["spec"] and old["spec"]["backoffLimit"] == 6


def test_data_job(gpu):
    _, c = container(gpu, "Job", "-data-r1")
    assert c["command"] == ["supportkit", "data", "generate"]
    assert c["args"][:2] == ["--offline", "--out=/data"]


def test_eval_job_and_cronjob_target_the_serve_service(full):
    svc = one(full, "Service", "-serve")
    url = f"http://{svc['metadata']['name']}.support.svc:{svc['spec']['ports'][0]['port']}"
    for kind, suffix in (("Job", "-eval-r1"), ("CronJob", "-eval")):
        spec, c = container(full, kind, suffix)
        assert c["command"] == ["supportkit", "eval", "run"]
        assert f"--endpoint={url}" in c["args"]
        assert "--panel=/configs/panel.yaml" in c["args"] and "--out=/reports/$(POD_NAME)" in c["args"]
        assert c["envFrom"] == [{"secretRef": {"name": "kit-supportkit-judges"}}]
        assert "--adapters=/adapters" in c["args"]  # manifests: validation loss and training energy
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["SUPPORTKIT_JUDGE_URL"] == url  # the local LLM judge is the in-cluster server
    assert one(full, "CronJob")["spec"]["schedule"] == "0 3 * * *"


def test_secrets_are_referenced_never_inlined(full, default):
    for docs in (default, full):
        for name, spec in pod_specs(docs):
            for c in spec["containers"]:
                for e in c.get("env", []):
                    if ("TOKEN" in e["name"] or "KEY" in e["name"]) and not e["name"].endswith("_FILE"):
                        assert "value" not in e and "secretKeyRef" in e["valueFrom"], (name, e)
                assert not any("sk-" in a or "token" in a.lower() for a in c.get("args", [])), name
    # Default: the chart makes a random admin token; existingSecret: it makes none and references that one.
    secret = one(default, "Secret", "-admin")
    assert len(base64.b64decode(secret["data"]["admin-token"])) == 32
    assert not [s for s in by_kind(full, "Secret") if s["metadata"]["name"].endswith("-admin")]
    # The token reaches serve as a read-only file from the Secret, named by SUPPORTKIT_ADMIN_TOKEN_FILE.
    spec, c = container(full, "Deployment", "-serve")
    env = {e["name"]: e for e in c["env"]}
    assert "SUPPORTKIT_ADMIN_TOKEN" not in env
    mount = next(m for m in c["volumeMounts"] if m["name"] == "admin-token")
    assert mount["readOnly"] and env["SUPPORTKIT_ADMIN_TOKEN_FILE"]["value"] == mount["mountPath"] + "/admin-token"
    vol = next(v for v in spec["volumes"] if v["name"] == "admin-token")["secret"]
    assert vol["secretName"] == "ops-supportkit-admin" and vol["items"] == [{"key": "admin-token", "path": "admin-token"}]
    judges = one(full, "Secret", "-judges")
    assert base64.b64decode(judges["data"]["OPENAI_API_KEY"]) == b"sk-test-not-a-real-key"


def test_existing_judge_secret(chart):
    docs = chart.render(sets=("eval.enabled=true", "eval.existingSecret=my-judges"))
    assert not [s for s in by_kind(docs, "Secret") if s["metadata"]["name"].endswith("-judges")]
    _, c = container(docs, "Job", "-eval-r1")
    assert c["envFrom"] == [{"secretRef": {"name": "my-judges"}}]


def test_network_policies(full, default):
    serve = one(full, "NetworkPolicy", "-serve")
    assert serve["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = serve["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    namespaces = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"] if "namespaceSelector" in p}
    assert namespaces == {"ingress-nginx", "support-desk", "monitoring"}
    assert {"podSelector": {}} in rule["from"]  # the release namespace (eval pods)
    # Egress: DNS only for serve and the jobs; eval adds the serve pods and the listed judge endpoints.
    for name in ("-serve", "-jobs"):
        (dns,) = one(full, "NetworkPolicy", name)["spec"]["egress"]
        assert {p["port"] for p in dns["ports"]} == {53}
    egress = one(full, "NetworkPolicy", "-eval")["spec"]["egress"]
    assert [e["to"][0]["ipBlock"]["cidr"] for e in egress if "ipBlock" in e["to"][0]] == ["203.0.113.0/24"]
    assert any(e["ports"] == [{"port": 8000, "protocol": "TCP"}] for e in egress)
    jobs = one(full, "NetworkPolicy", "-jobs")
    assert "ingress" not in jobs["spec"] and "Ingress" in jobs["spec"]["policyTypes"]  # nothing may connect in
    # The policies select the pods they mean to.
    serve_pod_labels = one(default, "Deployment", "-serve")["spec"]["template"]["metadata"]["labels"]
    sel = one(default, "NetworkPolicy", "-serve")["spec"]["podSelector"]["matchLabels"]
    assert sel.items() <= serve_pod_labels.items()


def test_monitoring_with_and_without_the_operator(chart):
    plain = chart.render()
    pod = one(plain, "Deployment", "-serve")["spec"]["template"]["metadata"]["annotations"]
    assert pod["prometheus.io/scrape"] == "true" and pod["prometheus.io/path"] == "/metrics"
    assert one(plain, "Service", "-serve")["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    operator = chart.render(monitoring_api=True)
    sm = one(operator, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics" and sm["spec"]["endpoints"][0]["port"] == "http"
    assert sm["spec"]["selector"]["matchLabels"].items() <= one(operator, "Service", "-serve")["metadata"]["labels"].items()
    assert "annotations" not in one(operator, "Deployment", "-serve")["spec"]["template"]["metadata"]
    rules = one(operator, "PrometheusRule")["spec"]["groups"][0]["rules"]
    exprs = " ".join(r["expr"] for r in rules)
    for metric in ("supportkit_requests_total", "supportkit_request_duration_seconds_bucket",
                   "supportkit_adapter_load_failures_total"):
        assert metric in exprs
    off = chart.render("monitoring-off", monitoring_api=True)
    assert "prometheus.io/scrape" not in one(off, "Deployment", "-serve")["spec"]["template"]["metadata"].get("annotations", {})
    assert not [c for c in by_kind(off, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]


def test_dashboard_configmap_has_the_sidecar_label(default):
    import json

    cm = one(default, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["supportkit.json"])
    assert dashboard["panels"]


def test_pdb_hpa_ingress(full, default):
    pdb = one(default, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1  # one replica can still be drained
    hpa = one(full, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert "replicas" not in one(full, "Deployment", "-serve")["spec"]  # the HPA owns the replica count
    ing = one(full, "Ingress")
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "http"}
    assert ing["spec"]["tls"][0]["secretName"] == "support-tls"
    assert not by_kind(default, "Ingress") and not by_kind(default, "HorizontalPodAutoscaler")


def test_claims_are_kept_on_uninstall(full, default):
    claims = {c["metadata"]["name"]: c for c in by_kind(default, "PersistentVolumeClaim")}
    assert set(claims) == {"kit-supportkit-model", "kit-supportkit-adapters"}
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in claims.values())
    assert claims["kit-supportkit-adapters"]["spec"]["accessModes"] == ["ReadWriteMany"]
    # existingClaim: no claim made, the existing one mounted.
    full_claims = {c["metadata"]["name"] for c in by_kind(full, "PersistentVolumeClaim")}
    assert "kit-supportkit-adapters" not in full_claims
    spec, _ = container(full, "Deployment", "-serve")
    assert next(v for v in spec["volumes"] if v["name"] == "adapters")["persistentVolumeClaim"]["claimName"] == "shared-adapters"


def test_image_digest_pins(full, default):
    _, c = container(full, "Deployment", "-serve")
    assert c["image"] == "registry.local:5000/supportkit-serve@sha256:" + "0" * 64
    _, c = container(default, "Deployment", "-serve")
    assert c["image"] == "supportkit-serve:0.1.0"


def test_notes_tell_how_to_reach_the_api(chart):
    from tests.helm.conftest import CHART, run

    out = run([chart.helm, "install", "kit", CHART, "--dry-run=client", "--namespace", "support"]).stdout
    assert "port-forward svc/kit-supportkit-serve" in out
    assert "/v1/models" in out and "/metrics" in out and "Gradio" in out
    assert "get secret kit-supportkit-admin" in out
