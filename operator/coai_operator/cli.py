"""`coai-operator` command line: run the operator, or run one engine step by hand."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _run_operator(args: argparse.Namespace) -> int:
    from kopf.cli import main as kopf_main  # kopf's own CLI keeps every option it documents

    from coai_operator.instance.index import NAMESPACES_ENV

    argv = ["run", "--standalone", "-m", "coai_operator.main"]
    if args.all_namespaces or not args.namespace:
        argv.append("--all-namespaces")
    for ns in args.namespace or []:
        argv += ["--namespace", ns]
    # The children's informers (instance/index.py) watch the same namespaces as kopf.
    os.environ[NAMESPACES_ENV] = "" if args.all_namespaces else ",".join(args.namespace or [])
    if args.liveness:
        argv += ["--liveness", args.liveness]
    if args.verbose:
        argv.append("--verbose")
    if args.metrics:
        os.environ["COAI_METRICS_ADDRESS"] = args.metrics  # read by the startup handler (main.py)
    return kopf_main(argv, standalone_mode=False) or 0


def _print_version(_: argparse.Namespace) -> int:
    import json
    import platform

    from coai_operator import __version__

    print(json.dumps({"version": __version__, "python": platform.python_version()}))
    return 0


def _import_compose(args: argparse.Namespace) -> int:
    import yaml

    from coai_operator.compose import ComposeError, find_app_service, import_compose
    from coai_operator.compose_env import InterpolationError, interpolate, resolve_service_env, variables

    text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()  # noqa: SIM115
    path = None if args.file == "-" else Path(args.file)
    try:
        env = variables(path, os.environ)
        doc = interpolate(yaml.safe_load(text) or {}, env)
        service_name, service = find_app_service(doc)
        app_env = resolve_service_env(service, env, path.parent if path else None, f"services.{service_name}")
        imported = import_compose(doc, name=args.name, version=args.version, app_env=app_env)
    except InterpolationError as exc:
        print("import-compose: nothing written; unresolved variables:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except ComposeError as exc:
        print(f"import-compose: {exc}", file=sys.stderr)
        return 1
    header = "".join(f"# {note}\n" for note in imported.notes)
    print(header + yaml.safe_dump_all(imported.manifests, sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coai-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (kopf) in the foreground")
    run.add_argument("-n", "--namespace", action="append", help="watch this namespace (repeatable)")
    run.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (default)")
    run.add_argument("--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--metrics", metavar="HOST:PORT",
                     help="serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 0.0.0.0:9102 (default: off)")
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=_run_operator)

    version = sub.add_parser("version", help="print the operator version as JSON")
    version.set_defaults(func=_print_version)

    compose = sub.add_parser("import-compose", help="turn a docker-compose file running CoAI into a CoaiInstance")
    compose.add_argument("file", help="docker-compose.yml (- for stdin)")
    compose.add_argument("--name", default="coai", help="name of the CoaiInstance (default coai)")
    compose.add_argument("--version", help="CoAI version, when the image has no version tag")
    compose.set_defaults(func=_import_compose)

    engine = sub.add_parser("engine", help="run one engine step (what the migration Jobs run)", add_help=False)
    engine.add_argument("engine_args", nargs=argparse.REMAINDER)
    engine.set_defaults(func=lambda a: _engine(a.engine_args))
    return parser


def _engine(argv: Sequence[str]) -> int:
    from coai_operator.engine.cli import main as engine_main

    return engine_main(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["engine"]:  # argparse would swallow the engine's own --help and options
        return _engine(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
