"""Operator benchmarks on the local control plane (e2e/localcluster), side by side with a baseline.

For each N (default 10 and 100; 500 with --big), first the baseline (baseline_operator.py: a
minimal kopf operator that only POSTs the same children), then coai-operator, each as its own
fresh process restricted to its own namespace (`-n`), each with its own API identity:

1. create N CoaiInstances at once (16 client threads), record when each create returned;
2. a watch (admin identity) records when each became Ready — coai-operator: status.phase Ready;
   baseline: its Deployment available (the same signal our Ready is computed from);
3. after all are Ready and the operator has caught up, a quiet window (--idle-seconds): requests per minute,
   and writes (a no-op resync must write nothing). The drift check runs every --resync-seconds
   (COAI_RESYNC_SECONDS) so the window holds at least one full round;
4. peak RSS (VmHWM) of each operator process.

API requests are counted by the apiserver itself: the cluster is started with an audit policy
that logs (Metadata level) every request of the two bench identities and nothing else, so
kopf's own requests (watches, annotation patches) count too. coai-operator's per-reconcile
figures come from its log line `reconciled NS/NAME (TRIGGER): phase P; R reads, W writes`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, watch

from e2e.bench.common import PYTHON, REPO, Report, log, peak_rss_kib, percentile
from e2e.localcluster.cluster import LocalCluster, kubeconfig_yaml

PROFILERS = {"wall": "e2e.bench.sampler", "cpu": "e2e.bench.cpuprofile", "mem": "e2e.bench.memprofile"}
USERS = {"coai": "bench-coai-operator", "baseline": "bench-baseline-operator"}
READ_VERBS = {"get", "list"}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": sorted(USERS.values())}, {"level": "None"}],
}
RECONCILED = re.compile(r"reconciled (\S+)/(\S+) \((.+?)\): phase (\S+); (\d+) reads, (\d+) writes")
QUIET_SECONDS = 5.0  # no event handled for this long: the operator has caught up
DRAIN_TIMEOUT = 300.0
LOG_LAG_SECONDS = 2.0  # a reconcile logs its line after its requests: count lines this much past the window


class AuditedCluster(LocalCluster):
    """LocalCluster plus two extra token users (system:masters) and an apiserver audit log that
    records only their requests."""

    tokens: dict[str, str]

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.log"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        if name == "kube-apiserver":
            self.tokens = {user: secrets.token_hex(24) for user in USERS.values()}
            with (self.state_dir / "tokens.csv").open("a") as out:
                for user, token in self.tokens.items():
                    out.write(f'{token},{user},uid-{user},"system:masters"\n')
            policy = self.state_dir / "audit-policy.yaml"
            policy.write_text(yaml.safe_dump(AUDIT_POLICY))
            argv = [*argv, f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                    "--audit-log-format=json", "--audit-log-mode=blocking", "--audit-log-maxsize=0"]
        return super()._spawn(name, argv, env)

    def user_kubeconfig(self, user: str) -> Path:
        path = self.state_dir / f"kubeconfig-{user}"
        if not path.exists():
            path.write_text(kubeconfig_yaml(self.api_url, self.state_dir / "pki" / "ca.crt", user, self.tokens[user]))
            path.chmod(0o600)
        return path


@dataclass
class AuditEvent:
    user: str
    verb: str
    at: float  # epoch seconds the request was received
    resource: str
    namespace: str
    subresource: str


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def read_audit(path: Path) -> list[AuditEvent]:
    """One event per request (auditID), whatever stages were logged."""
    seen: dict[str, AuditEvent] = {}
    if not path.exists():
        return []
    with path.open() as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            audit_id = event.get("auditID")
            if not audit_id or audit_id in seen:
                continue
            ref = event.get("objectRef") or {}
            seen[audit_id] = AuditEvent(
                (event.get("user") or {}).get("username", ""), event.get("verb", ""),
                _epoch(event["requestReceivedTimestamp"]), ref.get("resource", ""), ref.get("namespace", ""),
                ref.get("subresource", ""))
    return list(seen.values())


def summarize(events: list[AuditEvent], user: str, start: float, end: float) -> dict[str, Any]:
    chosen = [e for e in events if e.user == user and start <= e.at <= end]
    by_verb = Counter(e.verb for e in chosen)
    writes = [e for e in chosen if e.verb in WRITE_VERBS]
    return {
        "requests": len(chosen),
        "reads": sum(n for v, n in by_verb.items() if v in READ_VERBS),
        "writes": len(writes),
        "watches": by_verb.get("watch", 0),
        "by_verb": dict(by_verb),
        "writes_by_resource": dict(Counter(f"{e.verb} {e.resource}{'/' + e.subresource if e.subresource else ''}"
                                           for e in writes)),
        "seconds": round(end - start, 2),
    }


class OperatorProc:
    """An operator process whose output is timestamped line by line as it arrives."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, ready_text: str) -> None:
        self.lines: list[tuple[float, str]] = []
        self.log_path = log_path
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 90
        while not any(ready_text in line for _, line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"operator did not start: {self.text()[-3000:]}")
            time.sleep(0.1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log_path.open("w") as out:
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append((time.time(), line))
                out.write(line + "\n")

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def peak_rss_mib(self) -> float | None:
        kib = peak_rss_kib(self.proc.pid)
        return None if kib is None else kib / 1024

    def cpu_seconds(self) -> float | None:
        """user + system CPU time of the live process so far."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def last_activity(self) -> float:
        """When the operator last logged handling an event (drift checks excluded)."""
        for moment, line in reversed(self.lines):
            if ("reconciled " in line or "Handler '" in line) and "drift-check" not in line:
                return moment
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(timeout=10)


def instance_manifest(name: str, replicas: int = 0) -> dict[str, Any]:
    """replicas 0 by default: the node is real, and N app pods against no database would measure
    the kubelet, not the operator; both operators render and roll out the same Deployments."""
    return {
        "apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": name},
        "spec": {"version": "2.0.0", "replicas": replicas,
                 "database": {"host": "mariadb.db.svc", "user": "chatnio", "passwordSecretRef": {"name": "coai-db"}}},
    }


def _deployment_available(obj: Any) -> bool:
    """The Deployment controller has acted on this generation and its wanted pods are ready."""
    status, spec, meta = obj.status, obj.spec, obj.metadata
    want = spec.replicas if spec and spec.replicas is not None else 1
    observed = bool(status and (status.observed_generation or 0) >= (meta.generation or 1))
    return observed and (status.available_replicas or 0) >= want and (status.ready_replicas or 0) >= want


def _instance_settled(obj: dict[str, Any]) -> bool:
    """Ready, or with spec.replicas 0 the settled ScaledToZero state (what Ready is with no pods)."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != (obj.get("metadata") or {}).get("generation"):
        return False
    if status.get("phase") == "Ready":
        return True
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return ready.get("reason") == "ScaledToZero"


class ReadyWatch:
    """Records, per name, the first moment (monotonic) a predicate holds, from a watch stream."""

    def __init__(self, list_fn: Callable[..., Any], namespace: str, ready: Callable[[Any], bool],
                 name_of: Callable[[Any], str], **kwargs: Any) -> None:
        self.first: dict[str, float] = {}
        self._stop = threading.Event()
        self._args = (list_fn, namespace, ready, name_of, kwargs)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(10)

    def _run(self) -> None:
        list_fn, namespace, ready, name_of, kwargs = self._args
        while not self._stop.is_set():
            w = watch.Watch()
            self._started.set()
            try:
                for event in w.stream(list_fn, namespace=namespace, timeout_seconds=30, **kwargs):
                    obj = event["object"]
                    name = name_of(obj)
                    if name not in self.first and ready(obj):
                        self.first[name] = time.monotonic()
                    if self._stop.is_set():
                        w.stop()
                        break
            except Exception:  # a dropped watch: start it again
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class RunResult:
    kind: str
    n: int
    namespace: str
    all_ready_s: float | None = None
    ready_count: int = 0
    latencies: list[float] = field(default_factory=list)
    deployment_latencies: list[float] = field(default_factory=list)
    create_phase: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    peak_rss_mib: float | None = None
    cpu_seconds: float | None = None
    drain_s: float | None = None
    reconciles: dict[str, Any] = field(default_factory=dict)
    create_burst_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "n": self.n, "namespace": self.namespace, "all_ready_s": self.all_ready_s,
            "ready": self.ready_count, "create_burst_s": round(self.create_burst_s, 3),
            "latency_p50_s": percentile(self.latencies, 50), "latency_p95_s": percentile(self.latencies, 95),
            "latency_max_s": max(self.latencies, default=None),
            "deployment_available_p50_s": percentile(self.deployment_latencies, 50),
            "deployment_available_p95_s": percentile(self.deployment_latencies, 95),
            "busy_after_all_ready_s": self.drain_s, "cpu_seconds_until_idle": self.cpu_seconds,
            "create_phase": self.create_phase, "idle": self.idle, "peak_rss_mib": self.peak_rss_mib,
            "reconciles": self.reconciles,
        }


class OperatorBench:
    def __init__(self, report: Report, work: Path, idle_seconds: float, resync_seconds: float,
                 keep: bool = False, replicas: int = 0) -> None:
        self.report = report
        self.replicas = replicas
        self.keep = keep
        self.work = work
        self.idle_seconds = idle_seconds
        self.resync_seconds = resync_seconds
        self.cluster: AuditedCluster | None = None
        self.api: client.ApiClient | None = None

    def start(self) -> AuditedCluster:
        log("operator: starting the local control plane (with an audit log for the bench identities)")
        self.cluster = AuditedCluster(state_dir=self.work / "cluster", keep_state=self.keep).start()
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                             "crd/coaiinstances.coai.dev", "crd/coaimigrations.coai.dev")
        self.api = config.new_client_from_config(config_file=str(self.cluster.kubeconfig))
        return self.cluster

    def stop(self) -> None:
        if self.cluster:
            self.cluster.stop()

    def operator(self, kind: str, namespace: str, extra_env: dict[str, str] | None = None,
                 profile_out: Path | None = None, profiler: str = "wall") -> OperatorProc:
        assert self.cluster is not None
        env = {**self.cluster.env(), "KUBECONFIG": str(self.cluster.user_kubeconfig(USERS[kind])),
               "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), "COAI_RESYNC_SECONDS": str(self.resync_seconds),
               "COAI_METRICS_ADDRESS": "127.0.0.1:0",
               **(extra_env or {})}
        if kind == "coai":
            argv = [PYTHON, "-m", "coai_operator.cli", "run", "-n", namespace]
            if profile_out is not None:
                argv[1:1] = ["-m", PROFILERS[profiler], str(profile_out)]
            ready = "coai-operator watching"
        else:
            argv = [PYTHON, "-m", "kopf", "run", "--standalone", "-n", namespace, "-m", "e2e.bench.baseline_operator"]
            ready = "baseline operator watching"
        return OperatorProc(argv, env, self.work / f"{kind}-{namespace}.log", ready)

    def namespace(self, name: str) -> None:
        assert self.api is not None
        core = client.CoreV1Api(self.api)
        core.create_namespace({"metadata": {"name": name}})
        core.create_namespaced_secret(name, {"metadata": {"name": "coai-db"}, "stringData": {"password": "bench"}})

    def run_one(self, kind: str, n: int, profile_out: Path | None = None, profiler: str = "wall") -> RunResult:
        assert self.cluster is not None and self.api is not None
        ns = f"bench-{kind}-{n}{'-profile' if profile_out else ''}"
        result = RunResult(kind, n, ns)
        self.namespace(ns)
        op = self.operator(kind, ns, profile_out=profile_out, profiler=profiler)
        custom, apps = client.CustomObjectsApi(self.api), client.AppsV1Api(self.api)
        try:
            time.sleep(1.0)  # let the operator's watches list the empty namespace
            deployments = ReadyWatch(apps.list_namespaced_deployment, ns, _deployment_available,
                                     lambda o: o.metadata.name)
            instances = None
            if kind == "coai":
                instances = ReadyWatch(
                    lambda namespace, **kw: custom.list_namespaced_custom_object(
                        "coai.dev", "v1alpha1", namespace, "coaiinstances", **kw),
                    ns, _instance_settled, lambda o: o["metadata"]["name"])
            names = [f"coai-{i:04d}" for i in range(n)]
            created: dict[str, float] = {}
            wall_start, started = time.time(), time.monotonic()

            def create(name: str) -> None:
                custom.create_namespaced_custom_object("coai.dev", "v1alpha1", ns, "coaiinstances",
                                                       instance_manifest(name, self.replicas))
                created[name] = time.monotonic()

            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(create, names))
            result.create_burst_s = time.monotonic() - started
            ready_watch = instances or deployments
            deadline = time.monotonic() + 240 + 2 * n
            while len(ready_watch.first) < n and time.monotonic() < deadline and op.proc.poll() is None:
                time.sleep(0.1)
            result.ready_count = len(ready_watch.first)
            if result.ready_count == n:
                result.all_ready_s = max(ready_watch.first.values()) - started
            else:
                self.report.errors.append(f"operator {kind} N={n}: only {result.ready_count} of {n} Ready")
            result.latencies = [ready_watch.first[k] - created[k] for k in names if k in ready_watch.first]
            result.deployment_latencies = [deployments.first[k] - created[k] for k in names if k in deployments.first]
            # Wait until the operator has worked off its queue (no event handled for QUIET_SECONDS):
            # the quiet window must measure idling, not the tail of the burst.
            all_ready = time.time()
            quiet_deadline = all_ready + DRAIN_TIMEOUT
            while time.time() < quiet_deadline and time.time() - max(op.last_activity(), all_ready) < QUIET_SECONDS:
                time.sleep(0.2)
            result.drain_s = round(max(op.last_activity() - all_ready, 0.0), 2)
            result.cpu_seconds = op.cpu_seconds()
            ready_wall = time.time()
            idle_start = time.time()
            time.sleep(self.idle_seconds)
            idle_end = time.time()
            result.peak_rss_mib = op.peak_rss_mib()
            deployments.stop()
            if instances:
                instances.stop()
        finally:
            op.stop()
        events = read_audit(self.cluster.audit_log)
        user = USERS[kind]
        result.create_phase = summarize(events, user, wall_start, ready_wall)
        result.idle = summarize(events, user, idle_start, idle_end)
        result.idle["per_minute"] = round(result.idle["requests"] * 60 / max(idle_end - idle_start, 1e-6), 1)
        if kind == "coai":
            result.reconciles = reconcile_stats(op.lines, wall_start, ready_wall, idle_start, idle_end)
        return result


def reconcile_stats(lines: list[tuple[float, str]], create_start: float, create_end: float, idle_start: float,
                    idle_end: float) -> dict[str, Any]:
    """Per-reconcile request counts from coai-operator's `reconciled ...` log lines, by trigger."""
    groups: dict[str, list[tuple[int, int]]] = {}
    idle_requests = 0
    idle_triggers: Counter[str] = Counter()
    idle_moments: list[float] = []
    for moment, line in lines:
        m = RECONCILED.search(line)
        if not m:
            continue
        trigger = m.group(3)
        kind = "create" if trigger == "create" else "drift-check" if trigger == "drift-check" else \
            "child event" if " " in trigger else trigger
        reads, writes = int(m.group(5)), int(m.group(6))
        if create_start <= moment <= create_end:
            groups.setdefault(f"create phase: {kind}", []).append((reads, writes))
        elif idle_start <= moment <= idle_end + LOG_LAG_SECONDS:
            groups.setdefault(f"idle: {kind}", []).append((reads, writes))
            idle_requests += reads + writes
            idle_triggers[re.sub(r" \S+ ", " * ", trigger)] += 1
            idle_moments.append(moment - idle_start)
    out: dict[str, Any] = {}
    for key, values in groups.items():
        out[key] = {"reconciles": len(values), "reads_mean": round(sum(r for r, _ in values) / len(values), 2),
                    "writes_mean": round(sum(w for _, w in values) / len(values), 2),
                    "writes_total": sum(w for _, w in values)}
    out["idle_requests_from_reconcile_lines"] = idle_requests
    out["idle_triggers"] = dict(idle_triggers)
    if idle_moments:  # a backlog ends early in the window; a loop runs through it
        out["idle_reconcile_seconds_after_window_start"] = {
            "first": round(min(idle_moments), 2), "p50": round(percentile(idle_moments, 50) or 0, 2),
            "last": round(max(idle_moments), 2)}
    return out


def report_pair(report: Report, base: RunResult, ours: RunResult, resync: float) -> None:
    n = ours.n
    g = f"operator N={n}"
    b, o = base.summary(), ours.summary()
    report.add(g, "time until all Ready", o["all_ready_s"], "s", baseline=b["all_ready_s"],
               baseline_name="minimal kopf", target="<= 1.5")
    report.add(g, "create→Ready latency p50", o["latency_p50_s"], "s", baseline=b["latency_p50_s"],
               baseline_name="minimal kopf", target="<= 1.5")
    report.add(g, "create→Ready latency p95", o["latency_p95_s"], "s", baseline=b["latency_p95_s"],
               baseline_name="minimal kopf", target="<= 1.5")
    report.add(g, "create→Deployment available p50", o["deployment_available_p50_s"], "s",
               baseline=b["deployment_available_p50_s"], baseline_name="minimal kopf",
               note="children created and rolled out, before status is written")
    report.add(g, "API requests per instance, create phase", o["create_phase"]["requests"] / n, "requests",
               baseline=b["create_phase"]["requests"] / n, baseline_name="minimal kopf", target="<= 3",
               note=f"reads {o['create_phase']['reads'] / n:.1f}/{b['create_phase']['reads'] / n:.1f}, "
                    f"writes {o['create_phase']['writes'] / n:.1f}/{b['create_phase']['writes'] / n:.1f} per instance")
    first = ours.reconciles.get("create phase: create")
    if first:
        report.add(g, "requests of the create reconcile", first["reads_mean"] + first["writes_mean"], "requests",
                   note=f"{first['reads_mean']} reads + {first['writes_mean']} writes (mean of {first['reconciles']})")
    drift = ours.reconciles.get("idle: drift-check")
    if drift:
        report.add(g, "requests of a no-op resync (drift check)", drift["reads_mean"] + drift["writes_mean"],
                   "requests", target="== 0", note=f"{drift['reads_mean']} reads, {drift['writes_total']} writes in "
                                    f"{drift['reconciles']} resyncs")
    report.add(g, "writes in the quiet window (no-op resyncs)", o["idle"]["writes"], "writes",
               baseline=b["idle"]["writes"], baseline_name="minimal kopf", target="== 0")
    report.add(g, "idle API requests per minute", o["idle"]["per_minute"], "req/min",
               baseline=b["idle"]["per_minute"], baseline_name="minimal kopf (no drift check)",
               note=f"drift check every {resync:g}s")
    per_check = (drift["reads_mean"] + drift["writes_mean"]) if drift else 0.0
    # Watches are long-lived streams kopf re-opens every few minutes, not a request loop.
    non_watch = o["idle"]["requests"] - o["idle"]["watches"]
    unexplained = (non_watch - ours.reconciles.get("idle_requests_from_reconcile_lines", 0)) * 60 / max(
        o["idle"]["seconds"], 1e-6)
    report.add(g, "idle requests/min not from drift checks (loop?)", round(max(unexplained, 0.0), 1), "req/min",
               target="<= 1",
               note=f"drift checks: {n} x {per_check:g} GETs per round, a round every {resync:g}s + its own "
                    f"duration; {o['idle']['watches']} watch re-opens not counted")
    report.add(g, "operator busy after all Ready (event backlog)", o["busy_after_all_ready_s"], "s",
               baseline=b["busy_after_all_ready_s"], baseline_name="minimal kopf")
    report.add(g, "operator CPU time, start → caught up", o["cpu_seconds_until_idle"], "s",
               baseline=b["cpu_seconds_until_idle"], baseline_name="minimal kopf", target="<= 3")
    report.add(g, "operator peak RSS", o["peak_rss_mib"], "MiB", baseline=b["peak_rss_mib"],
               baseline_name="minimal kopf", target="<= 1.3")


def run(report: Report, *, sizes: list[int], idle_seconds: float, resync_seconds: float, scale: float,
        migration_users: int | None, migration: bool, workdir: Path | None = None, keep: bool = False,
        profile: str | None = None, profile_only: bool = False, replicas: int = 0) -> None:
    work = workdir or Path(tempfile.mkdtemp(prefix="coai-bench-operator-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = OperatorBench(report, work, idle_seconds, resync_seconds, keep, replicas)
    report.meta["operator"] = {"sizes": sizes, "idle_seconds": idle_seconds, "resync_seconds": resync_seconds,
                               "replicas": replicas, "workdir": str(work)}
    details = report.details.setdefault("operator", {})
    try:
        bench.start()
        for n in [] if profile_only else sizes:
            try:
                log(f"operator: N={n} baseline (minimal kopf operator)")
                base = bench.run_one("baseline", n)
                log(f"operator: N={n} coai-operator")
                ours = bench.run_one("coai", n)
                details[f"N={n}"] = {"baseline": base.summary(), "coai": ours.summary()}
                report_pair(report, base, ours, resync_seconds)
            except Exception as exc:
                report.failed(f"operator N={n}", exc)
        if profile and sizes:
            n = max(sizes)
            log(f"operator: N={n} coai-operator again, under the {profile} profiler (not a measured run)")
            try:
                out = work / f"operator-profile-{profile}.json"
                profiled = bench.run_one("coai", n, profile_out=out, profiler=profile)
                found = json.loads(out.read_text())
                details[f"profile_{profile}"] = {"n": n, "run": profiled.summary(), "profiler": found}
                for line in found.get("reconcile_inclusive") or found.get("by_self_time") or found.get("by_site") or []:
                    log(f"  {profile} profile: {line}")
            except Exception as exc:
                report.failed("operator profile", exc)
        if migration:
            from e2e.bench import migration_bench

            try:
                migration_bench.run(report, bench, scale=scale, users=migration_users)
            except Exception as exc:
                report.failed("CoaiMigration e2e", exc)
    finally:
        bench.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
