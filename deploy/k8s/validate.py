"""Checks of deploy/k8s, run by validate.sh inside its virtualenv.

1. Every manifest against the Kubernetes JSON schemas bundled in the PyPI
   package kubernetes-validate, strict (unknown fields are errors), for the
   oldest and newest Kubernetes versions in KUBE_VERSIONS. A kind without
   a schema is an error, not a warning as in the package's own CLI.
2. KEDA's ScaledObject and TriggerAuthentication against the JSON schema
   of KEDA's CRDs as packaged in cloudcoil-models-keda (pydantic models
   generated from the CRDs), made strict the way the API server's strict
   field validation is. The CRDs type a trigger's metadata and auth
   parameters as free string maps, so the Kafka scaler's keys are checked
   against KAFKA_METADATA / KAFKA_AUTH, written from the `keda:"name=..."`
   tags of KEDA's kafka scaler (pkg/scalers/kafka_scaler.go).
3. The ConfigMaps against the repository: jobs.yaml holds exactly the
   files the worker reads from jobs/; config.yaml's TOML and the
   Deployments' DISTILL_WATCH_* variables name only keys that
   deploy/distill-watch.toml has (the worker rejects unknown ones).
4. References between the manifests: ConfigMaps and Secret keys used
   exist, KEDA's trigger names the configured brokers, group and topic,
   the metrics port is the one the worker listens on.
"""

import pathlib
import sys
import tomllib

import jsonschema
import kubernetes_validate.utils as kv
import yaml
from cloudcoil.models.keda import v1alpha1 as keda

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes that KEDA 2.16 supports, and the newest bundled.
KUBE_VERSIONS = ["1.29.0", kv.latest_version()]
KEDA_MODELS = {
    "ScaledObject": keda.ScaledObject,
    "TriggerAuthentication": keda.TriggerAuthentication,
}
KAFKA_METADATA = {
    "bootstrapServers", "bootstrapServersFromEnv", "consumerGroup",
    "consumerGroupFromEnv", "topic", "topicFromEnv", "partitionLimitation",
    "lagThreshold", "activationLagThreshold", "offsetResetPolicy",
    "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "version",
    "tls", "unsafeSsl", "sasl", "saslTokenProvider", "awsRegion",
}
KAFKA_AUTH = {
    "sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword",
    "saslTokenProvider", "scopes", "oauthTokenEndpointUri", "oauthExtensions",
    "keytab", "realm", "kerberosConfig", "kerberosServiceName",
    "kerberosDisableFAST", "awsAccessKeyID", "awsSecretAccessKey",
    "awsSessionToken", "awsRoleArn",
}
KAFKA_ENUMS = {
    "offsetResetPolicy": {"latest", "earliest"},
    "sasl": {"none", "plaintext", "scram_sha256", "scram_sha512", "oauthbearer", "gssapi"},
    "tls": {"enable", "disable"},
}
KAFKA_BOOLS = {
    "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "unsafeSsl",
}
# Keys taken as given by the worker (librdkafka's), and variables under the
# prefix that are not configuration (pipeline/worker/src/config.rs).
CLIENT_SECTIONS = {"librdkafka", "consumer", "producer"}
ENV_NOT_CONFIG = {"config", "demo", "cache", "nisshi", "test"}

errors = []


def fail(where, message):
    errors.append(f"{where}: {message}")


def strict(schema):
    """Unknown fields become errors wherever the schema lists its fields."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


KEDA_SCHEMAS = {
    kind: strict(model.model_json_schema(by_alias=True))
    for kind, model in KEDA_MODELS.items()
}


def check_kafka_trigger(where, metadata):
    for key in sorted(set(metadata) - KAFKA_METADATA):
        fail(where, f"kafka trigger: unknown metadata key {key!r}")
    for key in ("bootstrapServers", "consumerGroup"):
        if key not in metadata and key + "FromEnv" not in metadata:
            fail(where, f"kafka trigger: {key} is required")
    for key, allowed in KAFKA_ENUMS.items():
        if key in metadata and metadata[key] not in allowed:
            fail(where, f"kafka trigger: {key} must be one of {sorted(allowed)}")
    for key in KAFKA_BOOLS & set(metadata):
        if metadata[key] not in ("true", "false"):
            fail(where, f'kafka trigger: {key} must be "true" or "false"')
    for key, least in (("lagThreshold", 1), ("activationLagThreshold", 0)):
        if key in metadata and not (metadata[key].isdigit() and int(metadata[key]) >= least):
            fail(where, f"kafka trigger: {key} must be an integer >= {least}")
    on = {k for k in KAFKA_BOOLS if metadata.get(k) == "true"}
    for a, b in (("allowIdleConsumers", "limitToPartitionsWithLag"),
                 ("limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions")):
        if {a, b} <= on:
            fail(where, f"kafka trigger: {a} and {b} exclude each other")
    if not metadata.get("topic") and on & {"limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions"}:
        fail(where, "kafka trigger: these options need a topic")


def check_schema(where, doc):
    kind = doc.get("kind")
    if kind in KEDA_SCHEMAS:
        if doc.get("apiVersion") != "keda.sh/v1alpha1":
            fail(where, f"{kind} must be keda.sh/v1alpha1")
        validator = jsonschema.Draft202012Validator(KEDA_SCHEMAS[kind])
        for e in validator.iter_errors(doc):
            fail(where, f"KEDA schema: {'.'.join(map(str, e.path))}: {e.message}")
        if kind == "ScaledObject":
            for i, t in enumerate(doc.get("spec", {}).get("triggers", [])):
                if t.get("type") == "kafka":
                    check_kafka_trigger(f"{where} triggers[{i}]", t.get("metadata", {}))
        if kind == "TriggerAuthentication":
            for ref in doc.get("spec", {}).get("secretTargetRef", []):
                if ref.get("parameter") not in KAFKA_AUTH:
                    fail(where, f"kafka auth: unknown parameter {ref.get('parameter')!r}")
        return
    for version in KUBE_VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            fail(where, f"Kubernetes {e.version}: {'.'.join(map(str, e.path))}: {e.message}")
            return
        except kv.SchemaNotFoundError as e:
            fail(where, e.message)
            return


def load(path):
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as e:
        fail(path.relative_to(ROOT), f"not YAML: {e}")
        return []
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            fail(path.relative_to(ROOT), "a document without apiVersion and kind")
            return []
    return docs


def known_keys():
    try:
        defaults = tomllib.loads((ROOT / "deploy" / "distill-watch.toml").read_text())
    except tomllib.TOMLDecodeError as e:
        fail("deploy/distill-watch.toml", f"not TOML, so no keys to check against: {e}")
        return None, None
    keys = {(s, k) for s, t in defaults.items() for k in t}
    return set(defaults), keys


def check_config(where, text, sections, keys):
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(where, f"distill-watch.toml: {e}")
        return {}
    if keys is None:
        return cfg
    for section, table in cfg.items():
        if section not in sections:
            fail(where, f"distill-watch.toml: unknown section [{section}]")
            continue
        for key, value in table.items():
            if section in CLIENT_SECTIONS:
                if not isinstance(value, str):
                    fail(where, f"[{section}] {key}: quote dotted keys and values")
            elif (section, key) not in keys:
                fail(where, f"distill-watch.toml: unknown key [{section}] {key}")
    return cfg


def check_env(where, name, sections, keys):
    if keys is None:
        return
    rest = name.removeprefix("DISTILL_WATCH_").lower()
    section, _, key = rest.partition("_")
    if section in ENV_NOT_CONFIG:
        return
    if section in CLIENT_SECTIONS and key:
        return
    if (section, key) not in keys:
        fail(where, f"env {name}: no such configuration key")


def main():
    manifests = sorted(K8S.glob("*.yaml")) + sorted((K8S / "examples").glob("*.yaml"))
    by_kind = {}
    count = 0
    for path in manifests:
        for doc in load(path):
            count += 1
            where = f"{path.relative_to(ROOT)} {doc['kind']}/{doc.get('metadata', {}).get('name')}"
            check_schema(where, doc)
            by_kind.setdefault(doc["kind"], {})[doc.get("metadata", {}).get("name")] = (where, doc)

    try:
        cross_checks(by_kind)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        # A malformed object (its schema error is reported above).
        fail("cross-checks", f"stopped at a malformed object: {e!r}")

    for e in errors:
        print(f"ERROR {e}")
    print(f"validate.py: {len(manifests)} files, {count} resources, Kubernetes "
          f"{' and '.join(KUBE_VERSIONS)} (strict), KEDA CRDs of cloudcoil-models-keda, "
          f"jobs/ and config cross-checks: {len(errors)} error(s)")
    return 1 if errors else 0


def cross_checks(by_kind):
    sections, keys = known_keys()
    cms = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})

    # 3. The jobs ConfigMap is jobs/ as the worker reads it.
    where, jobs_cm = cms.get("distill-watch-jobs", ("jobs.yaml", {"data": {}}))
    data = jobs_cm.get("data") or {}
    runtime = sorted((ROOT / "jobs").glob("*.sql")) + [ROOT / "jobs/scoring.toml", ROOT / "jobs/clusters.toml"]
    for path in runtime:
        if data.get(path.name) != path.read_text(encoding="utf-8"):
            fail(where, f"differs from jobs/{path.name}: run deploy/k8s/render.sh")
    for name in sorted(set(data) - {p.name for p in runtime}):
        fail(where, f"{name} is not a file the worker reads from jobs/: run deploy/k8s/render.sh")

    where, config_cm = cms.get("distill-watch-config", ("config.yaml", {"data": {}}))
    cfg = check_config(where, (config_cm.get("data") or {}).get("distill-watch.toml", ""), sections, keys)
    kafka = cfg.get("kafka", {})
    requests_topic = cfg.get("topics", {}).get("requests", "api.requests.v1")

    # 4. References.
    for name, (where, d) in by_kind.get("Deployment", {}).items():
        pod = d["spec"]["template"]["spec"]
        if pod.get("enableServiceLinks") is not False:
            fail(where, "needs enableServiceLinks: false (Service variables named DISTILL_WATCH_* stop the worker)")
        for v in pod.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in cms:
                fail(where, f"volume {v['name']}: no ConfigMap {v['configMap']['name']}")
            if "secret" in v:
                want = [i["key"] for i in v["secret"].get("items", [])]
                check_secret_keys(where, secrets, v["secret"]["secretName"], want)
        for c in pod["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for e in c.get("env", []):
                if e["name"].startswith("DISTILL_WATCH_"):
                    check_env(where, e["name"], sections, keys)
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    check_secret_keys(where, secrets, ref["name"], [ref["key"]])
                if e["name"] == "DISTILL_WATCH_METRICS_LISTEN":
                    port = int(e["value"].rsplit(":", 1)[1])
                    if ports.get("metrics") != port:
                        fail(where, f"the worker listens on {port}, the metrics port is {ports.get('metrics')}")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if c.get(probe, {}).get("httpGet", {}).get("port") not in ("metrics", ports.get("metrics")):
                    fail(where, f"{probe} must use the metrics port")

    auths = by_kind.get("TriggerAuthentication", {})
    for name, (where, d) in auths.items():
        for ref in d["spec"].get("secretTargetRef", []):
            check_secret_keys(where, secrets, ref["name"], [ref["key"]])
    for name, (where, d) in by_kind.get("ScaledObject", {}).items():
        if d["spec"]["scaleTargetRef"]["name"] not in by_kind.get("Deployment", {}):
            fail(where, "scaleTargetRef names no Deployment here")
        for t in d["spec"].get("triggers", []):
            auth = t.get("authenticationRef", {}).get("name")
            if auth and auth not in auths:
                fail(where, f"no TriggerAuthentication {auth}")
            m = t.get("metadata", {})
            for key, want in (("bootstrapServers", kafka.get("bootstrap_servers")),
                              ("consumerGroup", kafka.get("group_id")),
                              ("topic", requests_topic)):
                if m.get(key) != want:
                    fail(where, f"{key} {m.get(key)!r} is not the config's {want!r}")


def check_secret_keys(where, secrets, name, keys):
    if name not in secrets:
        fail(where, f"no Secret {name} (not even in examples/)")
        return
    d = secrets[name][1]
    have = set(d.get("data") or {}) | set(d.get("stringData") or {})
    for key in keys:
        if key not in have:
            fail(where, f"Secret {name} has no key {key}")


if __name__ == "__main__":
    sys.exit(main())
