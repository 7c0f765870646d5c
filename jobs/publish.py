"""`varith publish DIR --repo OWNER/NAME [--dry-run]`: upload a hub folder (hpc.hub).

The folder's manifest must check out first. Files already on the Hub with the same content are not uploaded
again; `--dry-run` lists what would be uploaded and what is there unchanged. The token is whatever
huggingface_hub finds (HF_TOKEN or the saved login); it is never printed or written. `--hub FOLDER` publishes to
a local folder standing in for the Hub (tests, offline mirrors).
"""

from __future__ import annotations

import argparse

HELP = "upload a hub folder (model files, card, manifest) to the Hugging Face Hub; --dry-run lists the changes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="DIR", help="hub folder made by varith regenerate (OUT/hub/<name>)")
    p.add_argument("--repo", required=True, help="Hub repository OWNER/NAME")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded and what is unchanged")
    p.add_argument("--hub", help="a local folder standing in for the Hub (default: the Hugging Face Hub)")


def run(args: argparse.Namespace) -> int:
    from hpc.hub import check_repo, hub_for, publish, publish_plan

    repo = check_repo(args.repo)
    hub = hub_for(args.hub)
    plan = publish_plan(hub, repo, args.folder)
    verb = "would upload" if args.dry_run else "upload"
    for name in plan.upload:
        print(f"{verb}: {name}")
    for name in plan.unchanged:
        print(f"unchanged: {name}")
    if not args.dry_run:
        publish(hub, repo, args.folder, plan)
    done = "would be uploaded" if args.dry_run else "uploaded"
    print(f"{repo}: {len(plan.upload)} file(s) {done}, {len(plan.unchanged)} unchanged")
    return 0
