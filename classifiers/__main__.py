"""Command line: ``python -m classifiers {cv,train,evaluate,info,export-joblib,import-joblib} ...``.

Examples (from the pack's folder, ComfyUI/custom_nodes/<pack>; FILE.csv in the Similarity-Trajectory format or a
dataset folder such as ComfyUI/output/artifact_datasets/my_artifacts):

    python -m classifiers cv --data FILE.csv --model paper_rf --folds 10 --seeds 5
    python -m classifiers train --data FILE.csv --name mine
        (writes ComfyUI/models/artifact_classifiers/mine.safetensors, where the nodes look for classifiers;
         ComfyUI is found from the pack's location or $COMFYUI_PATH; --out PATH writes elsewhere)
    python -m classifiers evaluate --model ../../models/artifact_classifiers/mine.safetensors --data OTHER.csv

Model files are never written inside the pack's own folder (ComfyUI does not read classifiers from there, and an
update of the pack would delete them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .data import DatasetError, read_dataset
from .estimators import make_model, recipe_names
from .evaluation import cross_validate, evaluate_probabilities
from .modelfile import (
    MetricMismatch,
    ModelFileError,
    TrainedFor,
    export_joblib,
    import_joblib,
    load_model,
)
from .training import layout_params, train_model

PACK_ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER_SUBDIR = os.path.join("models", "artifact_classifiers")


def comfyui_root() -> Path | None:
    """The ComfyUI folder this pack is installed in (ComfyUI/custom_nodes/<pack>), else $COMFYUI_PATH, else None."""
    cands = [PACK_ROOT.parent.parent] if PACK_ROOT.parent.name == "custom_nodes" else []
    if os.environ.get("COMFYUI_PATH"):
        cands.append(Path(os.environ["COMFYUI_PATH"]))
    for c in cands:
        if (c / "folder_paths.py").is_file() or (c / "main.py").is_file():
            return c.resolve()
    return None


def default_model_dir() -> Path | None:
    root = comfyui_root()
    return root / CLASSIFIER_SUBDIR if root is not None else None


def resolve_out(out: str | None, name: str | None, suffix: str = ".safetensors") -> str:
    """Where a model file goes: ``--out`` as given, or ``--name`` in ComfyUI's models/artifact_classifiers.
    Refuses a path inside the pack's own folder (a relative ``models/...`` run from the pack's root)."""
    where = default_model_dir()
    hint = (f"ComfyUI reads classifiers from {where}" if where else
            "ComfyUI reads classifiers from ComfyUI/models/artifact_classifiers")
    if out is None:
        if not name:
            raise ValueError("give --name NAME (a file in ComfyUI's models/artifact_classifiers) or --out PATH")
        if where is None:
            raise ValueError("--name needs the ComfyUI folder, which was not found (the pack is not inside "
                             "ComfyUI/custom_nodes and COMFYUI_PATH is not set): pass --out PATH instead, e.g. "
                             "--out /path/to/ComfyUI/models/artifact_classifiers/mine.safetensors")
        fname = name if name.endswith(suffix) else name + suffix
        if os.path.basename(fname) != fname or fname in (".", ".."):
            raise ValueError(f"--name {name!r} must be a plain file name; use --out for a path")
        out = str(where / fname)
    target = Path(out).expanduser().resolve()
    if target == PACK_ROOT or PACK_ROOT in target.parents:
        raise ValueError(f"--out {out} resolves to {target}, inside the pack's own folder, where ComfyUI does not "
                         f"look and a pack update would delete it. {hint}: use --name NAME, or --out with a path "
                         "outside the pack" + (f" such as {where / 'mine.safetensors'}" if where else ""))
    return str(target)


def _params(items: list[str] | None) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"--set expects NAME=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _recipe_params(args) -> dict:
    params = _params(args.set)
    if getattr(args, "jobs", None) and "n_jobs" in make_model(args.model).get_params():
        params.setdefault("n_jobs", args.jobs)
    make_model(args.model, **params)  # fail early on a bad parameter
    return params


def _data(args):
    nf = {"on": True, "off": False}.get(getattr(args, "noise_frame", None) or "", None)
    ds = read_dataset(args.data, metric=getattr(args, "metric", None), noise_frame=nf)
    for note in ds.notes:
        print(f"note: {note}", file=sys.stderr)
    return ds


def _add_data_args(p, data_help="CSV file (Similarity-Trajectory format) or a dataset folder"):
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--metric", choices=["dreamsim", "latent_cosine", "pixel_ssim"],
                   help="similarity metric of the series when the file does not say (default dreamsim)")
    p.add_argument("--noise-frame", choices=["on", "off"],
                   help="whether value 0 compares the starting noise, when the file does not say (default on)")


def _add_out_args(p):
    where = default_model_dir()
    loc = str(where) if where else "ComfyUI/models/artifact_classifiers (ComfyUI not found from here)"
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--name", help=f"file name of the model in {loc} (.safetensors is added): where the nodes "
                                  "look for classifiers")
    g.add_argument("--out", help="model file to write (.safetensors), anywhere outside the pack's own folder")


def _add_recipe_args(p):
    p.add_argument("--model", default="default", choices=recipe_names(), help="classifier recipe")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="recipe parameter (JSON value), repeatable")
    p.add_argument("--jobs", type=int, default=None, help="parallel jobs for the forest recipes")
    p.add_argument("--prefix", type=int, default=None,
                   help="use only the first K values of every series (a prefix classifier for early rejection)")


def cmd_cv(args) -> int:
    ds = _data(args)
    params = layout_params(args.model, _recipe_params(args), ds.noise_frame)
    if args.prefix:
        ds = ds.prefix(args.prefix)
    groups = ds.groups if args.group_by_prompt else None
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    print(f"data: {ds.summary()}", file=sys.stderr)

    def tick(done, total):
        if args.verbose:
            print(f"  fold {done}/{total}", file=sys.stderr)

    res = cross_validate(ds.X, ds.y, args.model, params, folds=args.folds, seeds=seeds, protocol=args.protocol,
                         groups=groups, on_fold=tick)
    print(res.summary())
    print(f"accuracy={res.accuracy_mean:.4f} accuracy_sem={res.accuracy_sem:.4f} auc={res.auc_mean:.4f} "
          f"auc_sem={res.auc_sem:.4f} n={res.n} seconds={res.seconds:.1f}")
    if args.json:
        print(json.dumps(res.as_dict(), indent=1))
    return 0


def cmd_train(args) -> int:
    out = resolve_out(args.out, args.name)
    ds = _data(args)
    params = _recipe_params(args)
    print(f"data: {ds.summary()}", file=sys.stderr)
    t0 = time.perf_counter()
    model = train_model(ds, args.model, params, prefix=args.prefix, cv_folds=args.folds, cv_seeds=args.cv_seeds,
                        first_seed=args.first_seed)
    path = model.save(out)
    if model.cv:
        print(f"cv: accuracy {model.cv['accuracy_mean']:.4f} +- {model.cv['accuracy_sem']:.4f}, "
              f"AUC {model.cv['auc_mean']:.4f} +- {model.cv['auc_sem']:.4f}")
    print(f"wrote {path} ({model.recipe}, {model.trained_for.describe()}, {time.perf_counter() - t0:.1f}s)")
    return 0


def cmd_evaluate(args) -> int:
    model = load_model(args.model)
    ds = _data(args)
    run_length = ds.length
    p, notes = model.p_artifact(ds.X, ds.metric, ds.noise_frame, run_length=run_length)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    ev = evaluate_probabilities(ds.y, p, args.threshold)
    print(ev.line())
    return 0


def cmd_info(args) -> int:
    model = load_model(args.model)
    print(json.dumps(model.metadata(), indent=1))
    return 0


def cmd_export(args) -> int:
    resolve_out(args.out, None, suffix=".joblib")  # never inside the pack
    model = load_model(args.model)
    print(f"wrote {export_joblib(model, args.out, trust_pickle=args.trust_pickle)}")
    return 0


def cmd_import(args) -> int:
    out = resolve_out(args.out, args.name)
    tf = None
    if args.length:
        tf = TrainedFor(args.metric or "dreamsim", (args.noise_frame or "on") == "on", args.length)
    model = import_joblib(args.joblib, trust_pickle=args.trust_pickle, trained_for=tf, scaler_path=args.scaler,
                          artifact_label=args.artifact_label)
    print(f"wrote {model.save(out)} ({model.recipe}, {model.trained_for.describe()})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m classifiers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("cv", help="repeated K-fold cross-validation: mean accuracy and ROC AUC with their SEM")
    _add_data_args(p)
    _add_recipe_args(p)
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--seeds", type=int, default=5, help="number of CV repetitions (reshuffled folds)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--protocol", choices=["stratified", "kfold"], default="stratified",
                   help="kfold = the authors' protocol (plain KFold, forest random_state 0)")
    p.add_argument("--group-by-prompt", action="store_true",
                   help="keep images of one prompt in one fold (column 'group', else the id before its last '_')")
    p.add_argument("--json", action="store_true", help="also print the full result as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_cv)

    where = default_model_dir()
    p = sub.add_parser("train", help="fit a recipe on all the data and write a model file",
                       description="Fit a recipe on all the data and write a model file. Example: `python -m "
                                   "classifiers train --data FILE.csv --name mine` writes "
                                   f"{where or 'ComfyUI/models/artifact_classifiers'}/mine.safetensors, where the "
                                   "nodes look for classifiers (refresh the node list to see it). --out PATH writes "
                                   "elsewhere, never inside the pack's own folder.")
    _add_data_args(p)
    _add_recipe_args(p)
    _add_out_args(p)
    p.add_argument("--folds", type=int, default=10, help="CV folds for the figures stored in the model")
    p.add_argument("--cv-seeds", type=int, default=1, help="CV repetitions before training (0: skip CV)")
    p.add_argument("--first-seed", type=int, default=0)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy and AUC of a model file on labelled data")
    p.add_argument("--model", required=True, help="model file (.safetensors)")
    _add_data_args(p)
    p.add_argument("--threshold", type=float, default=0.5, help="P(artifact) above which an image counts as artifact")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="print a model file's metadata")
    p.add_argument("--model", required=True)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export-joblib", help="write a model as joblib (pickle) for interop; needs --trust-pickle")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--trust-pickle", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import-joblib", help="convert a TRUSTED joblib file into a safe model file")
    p.add_argument("--joblib", required=True)
    _add_out_args(p)
    p.add_argument("--trust-pickle", action="store_true", help="required: unpickling can run arbitrary code")
    p.add_argument("--scaler", help="the StandardScaler joblib that goes with a bare forest (authors' scaler.joblib)")
    p.add_argument("--artifact-label", type=int, default=0, help="class of 'unnatural' in a bare forest (authors: 0)")
    p.add_argument("--metric", choices=["dreamsim", "latent_cosine", "pixel_ssim"])
    p.add_argument("--noise-frame", choices=["on", "off"])
    p.add_argument("--length", type=int, help="series length the imported estimator takes (needed without metadata)")
    p.set_defaults(func=cmd_import)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ModelFileError, MetricMismatch, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
