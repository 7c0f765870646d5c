"""`varith publish DIR --repo OWNER/NAME [--dry-run]`: upload a hub folder (jobs.stages.hub).

The repository id must follow the Hugging Face Hub's rule and the folder's manifest must check out, before any
request. Files already on the Hub with the same content are not uploaded again; `--dry-run` lists what would be
uploaded and what is there unchanged, and needs no network: without one it lists every file of the manifest,
marked not compared. A real upload that cannot reach the Hub is one error line, at once (no retries). The token
is whatever huggingface_hub finds (HF_TOKEN or the saved login); it is never printed or written. `--hub FOLDER`
publishes to a local folder standing in for the Hub (tests, offline mirrors).
"""

from __future__ import annotations

import argparse

HELP = "upload a hub folder (model files, card, manifest) to the Hugging Face Hub; --dry-run lists the changes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="DIR", help="hub folder made by varith regenerate (OUT/hub/<name>)")
    p.add_argument("--repo", required=True, help="Hub repository OWNER/NAME")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be uploaded and what is unchanged (without a network: every file, not compared)",
    )
    p.add_argument("--hub", help="a local folder standing in for the Hub (default: the Hugging Face Hub)")


def run(args: argparse.Namespace) -> int:
    from arith.errors import InputError
    from jobs.stages.hub import HubUnreachable, check_repo, hub_for, publish, publish_plan

    repo = check_repo(args.repo)
    hub = hub_for(args.hub)
    try:
        plan = publish_plan(hub, repo, args.folder, dry_run=args.dry_run)
    except HubUnreachable as exc:
        raise InputError(f"{exc}; nothing uploaded (--dry-run lists the files without a network)") from None
    verb = "would upload" if args.dry_run else "upload"
    for name in plan.upload:
        print(f"{verb}: {name}")
    for name in plan.unchanged:
        print(f"unchanged: {name}")
    if not args.dry_run:
        publish(hub, repo, args.folder, plan)
    done = "would be uploaded" if args.dry_run else "uploaded"
    if plan.not_compared:
        listed = f"{len(plan.upload)} file(s) {done}, every file of the manifest"
        print(f"{repo}: {listed} (not compared: {plan.not_compared})")
    else:
        print(f"{repo}: {len(plan.upload)} file(s) {done}, {len(plan.unchanged)} unchanged")
    return 0
