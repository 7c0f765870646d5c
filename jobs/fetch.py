"""`varith fetch NAME [--repo OWNER/NAME] [--layout auto|flat|per-model]`: download a published model (its weights,
train json and the behaviour, maths and accuracy JSON the repository holds) into the local cache
(jobs.stages.hub.cached_model: $VARITH_CACHE or ~/.cache/verified-arithmetic, then `<name>/`), under the flat
names every command loads by (`<name>.pth`, `<name>_train.json`, ...). The repository may hold the model in
either layout, detected: flat (`<name>.pth`, `<name>_train.json`, `<name>_behavior.json`, `<name>_maths.json`)
or per model (`model.pth`, `training_loss.json` of any era, `behaviors.json`, `features.json`). Without
`--repo`: the flat repository PhilipQuirke/VerifiedArithmetic (`--layout flat`), the per-model one
PhilipQuirke/QuantaMaths_<name> (`--layout per-model`), or (auto, the default) the flat one and, when it lacks
the model, the per-model one. Every file is checked against the sha256 the
repository's manifest.json gives it before it enters the cache; a mismatch is one error line and leaves no bad
file there. Files already there unchanged are not downloaded again; loading from the cache needs no network
(`varith predict --model NAME` finds it by name).
"""

from __future__ import annotations

import argparse

HELP = "download a published model and its JSON into the local cache (then it loads offline)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jobs.stages.hub import DEFAULT_OWNER, DEFAULT_REPO

    p.add_argument("name", help="model name, e.g. add_d6_l2_h3_t15K_s372001")
    p.add_argument(
        "--repo",
        help=f"Hub repository OWNER/NAME (default: {DEFAULT_REPO}, or {DEFAULT_OWNER}/QuantaMaths_<name>: --layout)",
    )
    p.add_argument(
        "--layout",
        choices=("auto", "flat", "per-model"),
        default="auto",
        help="which repository to use without --repo (auto: the flat one, then the per-model one); the layout "
        "of the repository's files is detected either way",
    )
    p.add_argument("--cache", help="cache folder (default: $VARITH_CACHE or ~/.cache/verified-arithmetic)")
    p.add_argument("--hub", help="a local folder standing in for the Hub (default: the Hugging Face Hub)")


def run(args: argparse.Namespace) -> int:
    import sys

    from arith.errors import InputError
    from arith.files import require_writable_dir
    from arith.names import parse_name
    from jobs.stages.hub import (
        DEFAULT_REPO,
        HubUnreachable,
        LocalFolderHub,
        NotInRepo,
        cache_dir,
        check_repo,
        fetch,
        hub_for,
        per_model_repo,
    )

    parse_name(args.name)
    if args.repo:
        repos = [check_repo(args.repo)]
    else:
        repos = {"flat": [DEFAULT_REPO], "per-model": [per_model_repo(args.name)]}.get(
            args.layout, [DEFAULT_REPO, per_model_repo(args.name)]
        )
    args.repo = repos[0]
    hub = hub_for(args.hub)
    if isinstance(hub, LocalFolderHub) and not hub.root.is_dir():
        raise InputError(f"--hub {args.hub}: no such folder")
    dest = cache_dir(args.cache)
    require_writable_dir(dest, "--cache" if args.cache else "the cache folder")

    def note(text: str) -> None:
        print(f"note: {text}", file=sys.stderr)

    try:
        for i, repo in enumerate(repos):
            try:
                paths = fetch(hub, repo, args.name, dest, note=note)
                break
            except NotInRepo:
                if i == len(repos) - 1:
                    raise
    except HubUnreachable as exc:
        paths = _cached(args, exc)
    except InputError:
        raise
    except Exception as exc:  # no network, Hub down: what the cache holds still loads
        paths = _cached(args, exc)
    for path in paths:
        print(path)
    return 0


def _cached(args: argparse.Namespace, exc: Exception) -> list:
    """The cached copy when the Hub cannot be reached; one error line when there is none."""
    import sys

    from arith.errors import InputError
    from arith.names import artifact_path
    from jobs.stages.hub import FETCHED, cached_model

    folder = cached_model(args.name, args.cache)
    cached = [artifact_path(folder, args.name, kind) for kind in FETCHED]
    why = str(exc) if isinstance(exc, InputError) else f"cannot reach {args.repo} ({type(exc).__name__})"
    if not cached[0].is_file():
        raise InputError(f"{why}; {args.name} is not cached") from None
    print(f"note: {why}; using the cached copy", file=sys.stderr)
    return [p for p in cached if p.is_file()]
