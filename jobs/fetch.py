"""`varith fetch NAME [--repo OWNER/NAME]`: download a published model (`<name>.pth`, `<name>_train.json` and
the behaviour, maths and accuracy JSON the repository holds) into the local cache (hpc.hub.cache_dir:
$VARITH_CACHE or ~/.cache/verified-arithmetic/<name>/). Files already there unchanged are not downloaded again;
loading from the cache needs no network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "download a published model and its JSON into the local cache (then it loads offline)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from hpc.hub import DEFAULT_REPO

    p.add_argument("name", help="model name, e.g. add_d6_l2_h3_t15K_s372001")
    p.add_argument("--repo", default=DEFAULT_REPO, help=f"Hub repository OWNER/NAME (default {DEFAULT_REPO})")
    p.add_argument("--cache", help="cache folder (default: $VARITH_CACHE or ~/.cache/verified-arithmetic)")
    p.add_argument("--hub", help="a local folder standing in for the Hub (default: the Hugging Face Hub)")


def run(args: argparse.Namespace) -> int:
    import sys

    from arith.errors import InputError
    from arith.names import artifact_path, parse_name
    from hpc.hub import FETCHED, LocalFolderHub, cache_dir, check_repo, fetch, hub_for

    parse_name(args.name)
    hub = hub_for(args.hub)
    if isinstance(hub, LocalFolderHub) and not hub.root.is_dir():
        raise InputError(f"--hub {args.hub}: no such folder")
    dest = Path(args.cache) if args.cache else cache_dir()
    try:
        paths = fetch(hub, check_repo(args.repo), args.name, dest)
    except InputError:
        raise
    except Exception as exc:  # no network, Hub down: what the cache holds still loads
        cached = [artifact_path(dest / args.name, args.name, kind) for kind in FETCHED]
        paths = [p for p in cached if p.is_file()]
        if not paths or not cached[0].is_file():
            raise InputError(f"cannot reach {args.repo} ({type(exc).__name__}) and {args.name} is not cached") from None
        print(f"note: cannot reach {args.repo} ({type(exc).__name__}); using the cached copy", file=sys.stderr)
    for path in paths:
        print(path)
    return 0
