"""Runs the sharded definitions of pipelines/ locally, step by step, with the real binary.

A schema validator proves that a manifest is well formed, not that its arguments are ones the
binary accepts or that the steps fit together. This runner takes the exact `args` of every
container in `kubernetes/sharded-check.yaml` and in `argo/sharded-check.yaml` (and the one-pod
gate of `kubernetes/check-job.yaml`, the step of `tekton/task-check.yaml` and the `verify`
step of `tekton/task-verified-data.yaml` on a copy of the batch), expands them
the way Kubernetes (`$(VAR)`) and Argo (`{{...}}`) would, maps the volumes and artifacts to
local directories, swaps the S3 batch and baseline for local files, runs each step in the
engine's order, and checks that the sharded report is byte for byte the one of a plain
`poisongate check`, with the plain check's exit code.

    python pipelines/run_local.py --bin target/debug/poisongate --baseline B.json \\
        --data testdata/clean/shards --expect 0
    python pipelines/run_local.py --bin target/debug/poisongate \\
        --profile testdata/clean/shards --label defaulted --shards 3

With --profile it runs `kubernetes/sharded-profile.yaml` and `argo/sharded-profile.yaml`
instead, and each baseline must be the one a plain `poisongate profile` writes.

Uses PyYAML only. Exits non-zero with one line on the first mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def fail(message: str) -> None:
    sys.exit(f"run_local: {message}")


def run(binary: str, args: list[str], allowed=(0,)) -> int:
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if done.returncode not in allowed:
        fail(f"poisongate {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.returncode


def swap(args: list[str], data_s3: str, data: str, baseline_s3: str, baseline: str,
         sha: str) -> list[str]:
    out = []
    for a in args:
        a = a.replace(data_s3, data).replace(baseline_s3, baseline)
        out.append(a)
    # The example digest pins a baseline nobody has; pin the one under test instead.
    for i, a in enumerate(out[:-1]):
        if a == "--expect-baseline-sha256":
            out[i + 1] = sha
    return out


def container_args(container, env, shared: Path) -> list[str]:
    """A Job container's args as its pod would run them: `$(VAR)` expanded from `env` (an
    unexpanded one fails), and the `/shared` volume mapped to the local directory `shared`."""
    args = list(container["args"])
    for name, value in (env or {}).items():
        args = [a.replace(f"$({name})", value) for a in args]
    if any("$(" in a for a in args):
        fail(f"unexpanded variable in {container['name']}: {args}")
    return [a.replace("/shared/", f"{shared}/").replace("/shared", str(shared)) for a in args]


def kubernetes(opts, sha: str, work: Path) -> tuple[int, bytes]:
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(
        (HERE / "kubernetes" / "sharded-check.yaml").read_text()) if d}
    shared = work / "k8s-shared"
    (shared / "parts").mkdir(parents=True)

    def args_of(container, env=None) -> list[str]:
        # Volume paths are mapped before the S3 swap, so that a local data path is never
        # taken for a mount.
        return swap(container_args(container, env, shared), "s3://ml-data/credit/dt=2026-11-27/",
                    opts.data, "s3://ml-pins/credit/baseline.json", opts.baseline, sha)

    plan = docs["poisongate-plan"]["spec"]["template"]["spec"]["containers"][0]
    run(opts.bin, args_of(plan))
    job = docs["poisongate-summarize"]
    if job["spec"].get("completionMode") != "Indexed":
        fail("the summarize Job is not an Indexed Job")
    completions = int(job["spec"]["completions"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    shard_env = [e for e in container["env"] if e["name"] == "SHARD"]
    if not shard_env or "job-completion-index" not in shard_env[0]["valueFrom"]["fieldRef"][
            "fieldPath"]:
        fail("SHARD does not come from the job-completion-index annotation")
    # Pods of an Indexed Job run in any order.
    for index in reversed(range(completions)):
        run(opts.bin, args_of(container, {"SHARD": str(index)}))
    spec = docs["poisongate-decide"]["spec"]["template"]["spec"]
    if docs["poisongate-decide"]["spec"].get("backoffLimit") != 0:
        fail("the deciding Job may retry")
    for init in spec.get("initContainers", []):
        run(opts.bin, args_of(init))
    code = run(opts.bin, args_of(spec["containers"][0]), allowed=(0, 1))
    return code, (shared / "report.json").read_bytes()


def argo(opts, sha: str, work: Path) -> tuple[int, bytes]:
    codes, outputs = argo_workflow(
        "sharded-check.yaml", {"data": opts.data, "baseline": opts.baseline,
                               "baseline-sha256": sha, "shards": str(opts.shards)},
        opts.bin, work, gate="check")
    if "check" not in codes:
        fail("the workflow has no check step")
    return codes["check"], outputs["check"]["report"].read_bytes()


def argo_workflow(file: str, given: dict[str, str], binary: str, work: Path,
                  gate: str | None = None) -> tuple[dict[str, int], dict[str, dict[str, Path]]]:
    """Runs the DAG of the WorkflowTemplate `argo/FILE` with the parameters `given`: each
    task's exit code and output artifacts, by task. Only the template `gate` may exit 1."""
    wt = yaml.safe_load((HERE / "argo" / file).read_text())
    spec = wt["spec"]
    params = {p["name"]: p.get("value") for p in spec["arguments"]["parameters"]}
    unknown = set(given) - set(params)
    if unknown:
        fail(f"{file}: no parameters {sorted(unknown)}")
    params.update(given)
    templates = {t["name"]: t for t in spec["templates"]}
    repo = work / f"argo-repo-{file}"  # the artifact repository: key -> file
    workflow_name = f"poisongate-{Path(file).stem}-local"
    outputs: dict[str, dict[str, Path]] = {}
    codes: dict[str, int] = {}

    def expand(text: str, inputs: dict[str, str]) -> str:
        def sub(m):
            key = m.group(1).strip()
            if key.startswith("workflow.parameters."):
                return params[key.split(".", 2)[2]]
            if key == "workflow.name":
                return workflow_name
            if key.startswith("inputs.parameters."):
                return inputs[key.split(".", 2)[2]]
            fail(f"unknown Argo expression {{{{{key}}}}}")
        return re.sub(r"\{\{([^}]+)\}\}", sub, text)

    def execute(task_name: str, template_name: str, in_params: dict[str, str],
                in_artifacts: dict[str, Path]) -> int:
        t = templates.get(template_name) or fail(f"no template {template_name}")
        pod = work / f"argo-pods-{file}" / task_name
        pod.mkdir(parents=True)
        declared = {p["name"] for p in t.get("inputs", {}).get("parameters", [])}
        if declared != set(in_params):
            fail(f"{task_name}: parameters {sorted(in_params)} != inputs {sorted(declared)}")
        for art in t.get("inputs", {}).get("artifacts", []):
            dest = pod / art["path"].lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if "s3" in art:
                src = repo / expand(art["s3"]["key"], in_params)
                if not src.is_dir():
                    fail(f"{task_name}: no artifacts under key {src.relative_to(repo)}")
                shutil.copytree(src, dest)
            elif art["name"] in in_artifacts:
                shutil.copyfile(in_artifacts[art["name"]], dest)
            else:
                fail(f"{task_name}: input artifact {art['name']} is not passed")
        for mount in t["container"].get("volumeMounts", []):
            (pod / mount["mountPath"].lstrip("/")).mkdir(parents=True, exist_ok=True)

        def local(a: str) -> str:
            return str(pod / a.lstrip("/")) if a.startswith(("/in/", "/work/")) else a

        # Mounts are mapped before parameters are expanded, so a local data path that
        # happens to start with /work/ is left alone.
        args = [expand(local(a), in_params) for a in t["container"]["args"]]
        code = run(binary, args, allowed=(0, 1) if template_name == gate else (0,))
        produced = {}
        for art in t.get("outputs", {}).get("artifacts", []):
            path = pod / art["path"].lstrip("/")
            if not path.exists():
                if art.get("optional"):
                    continue
                fail(f"{task_name}: output artifact {art['name']} was not written")
            if "s3" in art:
                key = repo / expand(art["s3"]["key"], in_params)
                key.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, key)
            produced[art["name"]] = path
        outputs[task_name] = produced
        return code

    def artifacts_of(task) -> dict[str, Path]:
        got = {}
        for art in task.get("arguments", {}).get("artifacts", []):
            m = re.fullmatch(r"\{\{tasks\.([\w-]+)\.outputs\.artifacts\.([\w-]+)\}\}", art["from"])
            if not m or m.group(2) not in outputs.get(m.group(1), {}):
                fail(f"task {task['name']}: artifact {art['from']} does not exist")
            got[art["name"]] = outputs[m.group(1)][m.group(2)]
        return got

    tasks = templates[spec["entrypoint"]]["dag"]["tasks"]
    done: set[str] = set()
    while len(done) < len(tasks):
        ready = [t for t in tasks if t["name"] not in done
                 and all(d in done for d in re.findall(r"[\w-]+", t.get("depends", "")))]
        if not ready:
            fail("the DAG has a cycle or an unknown dependency")
        for task in ready:
            params_of = {p["name"]: p["value"] for p in task.get("arguments", {}).get(
                "parameters", [])}
            if "withSequence" in task:
                count = int(expand(task["withSequence"]["count"], {}))
                for item in range(count):
                    p = {k: v.replace("{{item}}", str(item)) for k, v in params_of.items()}
                    execute(f"{task['name']}-{item}", task["template"], p, artifacts_of(task))
            else:
                codes[task["name"]] = execute(task["name"], task["template"], params_of,
                                              artifacts_of(task))
            done.add(task["name"])
    return codes, outputs


def same_baseline(engine: str, opts, baseline: Path, digest_file: Path, plain: Path) -> None:
    """A sharded profile's baseline and its `.sha256` must be the plain profile's, byte for
    byte."""
    if not baseline.is_file() or not digest_file.is_file():
        fail(f"{engine} sharded profile: no baseline or digest was written")
    if baseline.read_bytes() != plain.read_bytes():
        fail(f"{engine} sharded profile: the baseline differs from the plain profile's")
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    if digest_file.read_text() != f"{digest}  baseline.json\n":
        fail(f"{engine} sharded profile: the digest file does not name the baseline's SHA-256")
    print(f"ok: {engine} sharded profile of {opts.profile} ({opts.shards} shards): "
          "baseline identical")


def argo_profile(opts, work: Path, plain: Path) -> None:
    """The sharded profile of argo/sharded-profile.yaml."""
    _, outputs = argo_workflow("sharded-profile.yaml",
                               {"data": opts.profile, "label": opts.label,
                                "shards": str(opts.shards)}, opts.bin, work)
    got = outputs.get("baseline", {})
    if "baseline" not in got or "baseline-sha256" not in got:
        fail("argo sharded profile: the baseline step wrote no baseline or digest")
    same_baseline("argo", opts, got["baseline"], got["baseline-sha256"], plain)


def kubernetes_profile(opts, work: Path, plain: Path) -> None:
    """The sharded profile of kubernetes/sharded-profile.yaml: the Jobs' args with `$(SHARD)`
    expanded, the shard count and the label set to the ones under test, the shared volume a
    local directory."""
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(
        (HERE / "kubernetes" / "sharded-profile.yaml").read_text()) if d}
    shared = work / "k8s-profile-shared"
    (shared / "profile" / "parts").mkdir(parents=True)

    def args_of(container, env=None) -> list[str]:
        args = container_args(container, env, shared)
        args = [opts.profile if a == "s3://ml-data/credit/trusted/" else a for a in args]
        for i, a in enumerate(args[:-1]):
            if a == "--label":
                args[i + 1] = opts.label
            if a == "--shard":
                index, count = args[i + 1].split("/")
                if count != str(completions):
                    fail(f"--shard {args[i + 1]} does not count the Job's {completions} pods")
                args[i + 1] = f"{index}/{opts.shards}"
        return args

    def spec_of(name: str):
        job = docs.get(name) or fail(f"no Job {name}")
        return job["spec"], job["spec"]["template"]["spec"]

    _, plan = spec_of("poisongate-profile-plan")
    job, pod = spec_of("poisongate-profile-shards")
    if job.get("completionMode") != "Indexed":
        fail("the profile-shards Job is not an Indexed Job")
    completions = int(job["completions"])
    run(opts.bin, args_of(plan["containers"][0]))
    # Pods of an Indexed Job run in any order; the count under test replaces the Job's.
    for index in reversed(range(opts.shards)):
        run(opts.bin, args_of(pod["containers"][0], {"SHARD": str(index)}))
    job, pod = spec_of("poisongate-profile-pin")
    if job.get("backoffLimit") != 0:
        fail("the pinning Job may retry")
    run(opts.bin, args_of(pod["containers"][0]))
    baseline = shared / "profile" / "baseline.json"
    same_baseline("kubernetes", opts, baseline, shared / "profile" / "baseline.json.sha256",
                  plain)


def gate_job(opts, sha: str, work: Path) -> tuple[int, dict]:
    """The one-pod gate of kubernetes/check-job.yaml: its container's args with `$(VAR)` taken
    from the env it declares (a ConfigMap key), the mounts mapped to local directories. Its
    report carries its own policy file, so the verdict and findings are compared, not bytes."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(
        (HERE / "kubernetes" / "check-job.yaml").read_text()) if d}
    job = docs[("Job", "poisongate-gate")]
    if job["spec"].get("backoffLimit") != 0:
        fail("the gate Job may retry")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config = docs[("ConfigMap", "poisongate-gate")]["data"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    local = {name: work / f"gate-{name}" for name in mounts}
    for path in local.values():
        path.mkdir()
    for volume in pod["volumes"]:
        for item in volume.get("configMap", {}).get("items", []):
            (local[volume["name"]] / item["path"]).write_text(config[item["key"]])
    args = container["args"]
    for e in container["env"]:
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        value = config[ref["key"]] if ref else e["value"]
        args = [a.replace(f"$({e['name']})", value) for a in args]
    for name, mount in mounts.items():
        args = [a.replace(f"{mount}/", f"{local[name]}/") for a in args]
    args = swap(args, "s3://ml-data/credit/dt=2026-11-27/", opts.data,
                "s3://ml-pins/credit/baseline.json", opts.baseline, sha)
    code = run(opts.bin, args, allowed=(0, 1))
    return code, yaml.safe_load((local["reports"] / "report.json").read_text())


def substituted(task: dict, step_name: str, values: dict[str, str]) -> list[str]:
    """The arguments of one step of a Tekton Task with its `$(...)` references replaced as
    Tekton would; an undeclared parameter or an unknown reference fails."""
    declared = {f"params.{p['name']}" for p in task["spec"]["params"]}
    steps = [s for s in task["spec"]["steps"] if s["name"] == step_name]
    if len(steps) != 1:
        fail(f"Tekton: no single step {step_name!r} in {task['metadata']['name']}")
    args = []
    for a in steps[0]["args"]:
        for ref in re.findall(r"\$\(([^)]+)\)", a):
            if ref not in values or (ref.startswith("params.") and ref not in declared):
                fail(f"Tekton: unknown reference $({ref})")
            a = a.replace(f"$({ref})", values[ref])
        args.append(a)
    return args


def tekton_task(opts, sha: str, work: Path) -> tuple[int, dict]:
    """The step of tekton/task-check.yaml with its `$(params.*)` and workspace paths substituted
    as Tekton would (the S3 batch and baseline as local files), then the `verify` step of
    tekton/task-verified-data.yaml on a copy of the batch: it must pass exactly when the gate
    passed, and refuse the copy once a file the gate did not read is added to it."""
    task = yaml.safe_load((HERE / "tekton" / "task-check.yaml").read_text())
    if len(task["spec"]["steps"]) != 1:
        fail("the Tekton check Task has more than one step")
    reports = work / "tekton-reports"
    reports.mkdir()
    keys = work / "tekton-gate-key"
    keys.mkdir()
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    str(keys / "gate.pem")], check=True)
    subprocess.run(["openssl", "ec", "-in", str(keys / "gate.pem"), "-pubout", "-out",
                    str(keys / "gate.pub")], check=True, stderr=subprocess.DEVNULL)
    values = {"params.data": opts.data, "params.baseline": opts.baseline,
              "params.baseline-sha256": sha, "workspaces.reports.path": str(reports),
              "workspaces.gate-key.path": str(keys)}
    code = run(opts.bin, substituted(task, "check", values), allowed=(0, 1))

    verified = yaml.safe_load((HERE / "tekton" / "task-verified-data.yaml").read_text())
    data = work / "tekton-data"
    batch = data / "batch"
    if Path(opts.data).is_dir():
        shutil.copytree(opts.data, batch)
    else:
        batch.mkdir(parents=True)
        shutil.copy(opts.data, batch)
    args = substituted(verified, "verify", {"workspaces.reports.path": str(reports),
                                            "workspaces.gate-pub.path": str(keys),
                                            "workspaces.data.path": str(data)})
    if (got := run(opts.bin, args, allowed=(0, 1))) != code:
        fail(f"Tekton verified-data: verify exited {got} on the gate's batch, the gate {code}")
    shutil.copy(HERE.parent / "testdata" / "poison" / "trigger_channel.parquet", batch / "late.parquet")
    if run(opts.bin, args, allowed=(0, 1)) != 1:
        fail("Tekton verified-data: a file added after the gate was not refused")
    return code, yaml.safe_load((reports / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", required=True)
    parser.add_argument("--baseline")
    parser.add_argument("--data")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--expect", type=int, help="the plain check's exit code")
    parser.add_argument("--profile", help="trusted data: run the sharded profile instead")
    parser.add_argument("--label", help="with --profile: the label column")
    opts = parser.parse_args()
    if opts.profile:
        if not opts.label:
            parser.error("--profile needs --label")
        with tempfile.TemporaryDirectory(prefix="pg-pipelines-") as tmp:
            plain = Path(tmp) / "plain" / "baseline.json"
            plain.parent.mkdir()
            run(opts.bin, ["profile", opts.profile, "--label", opts.label, "--seed", "0",
                           "-o", str(plain)])
            kubernetes_profile(opts, Path(tmp), plain)
            argo_profile(opts, Path(tmp), plain)
        return
    if opts.baseline is None or opts.data is None or opts.expect is None:
        parser.error("a sharded check needs --baseline, --data and --expect")
    sha = hashlib.sha256(Path(opts.baseline).read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory(prefix="pg-pipelines-") as tmp:
        work = Path(tmp)
        plain = work / "plain.json"
        code = run(opts.bin, ["check", "--baseline", opts.baseline, "--expect-baseline-sha256",
                              sha, opts.data, "--json", str(plain)], allowed=(0, 1))
        if code != opts.expect:
            fail(f"plain check exited {code}, expected {opts.expect}")
        for engine, fn in (("kubernetes", kubernetes), ("argo", argo)):
            got, report = fn(opts, sha, work)
            if got != code:
                fail(f"{engine}: the sharded check exited {got}, the plain check {code}")
            if report != plain.read_bytes():
                fail(f"{engine}: the sharded report differs from the plain report")
            print(f"ok: {engine} sharded check of {opts.data}: exit {got}, report identical")
        mine = yaml.safe_load(plain.read_text())
        for name, fn in (("kubernetes gate Job", gate_job), ("Tekton check Task", tekton_task)):
            got, report = fn(opts, sha, work)
            if got != code or report["findings"] != mine["findings"]:
                fail(f"{name}: exit {got} and its findings differ from the plain check's")
            extra = ("; verified-data Task: the copy verifies exactly when the gate passed, and "
                     "a file added after the gate is refused") if name.startswith("Tekton") else ""
            print(f"ok: {name} on {opts.data}: exit {got}, same findings{extra}")


if __name__ == "__main__":
    main()
