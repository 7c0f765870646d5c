"""`varith publish DIR... [--repo OWNER/NAME] [--owner OWNER] [--dry-run]`: upload hub folders of either layout
(jobs.stages.hub).

Each DIR is a hub folder, flat (`<name>.pth`, `<name>_train.json`, ...) or per model (`model.pth`,
`training_loss.json`, `behaviors.json`, `features.json`), its layout detected; or a folder of hub folders
(`OUT/hub`). Where each goes: with one DIR, `--repo`; with several, a flat folder to `--repo` (one repository of
many models, as the legacy one) and a per-model folder to `OWNER/QuantaMaths_<name>` (OWNER: `--owner`, else
`--repo`'s owner). Repository ids must follow the Hugging Face Hub's rule, checked before anything.

A folder is uploaded only when its manifest checks out and every file survives a save -> reload round trip with
identical bytes; only files new or changed on the Hub go up. `--dry-run` lists what would be uploaded and what is
there unchanged, and needs no network: without one it lists every file of the manifest, marked not compared. A
real upload that cannot reach the Hub is one error line, at once (no retries). The publish manifest
(`--record`, default `publish_manifest.json` beside the first DIR) keeps per model what changed, whether the
round trip held, what was uploaded and any error. The token is whatever huggingface_hub finds (HF_TOKEN or the
saved login); it is never printed or written. `--hub FOLDER` publishes to a local folder standing in for the Hub.
"""

from __future__ import annotations

import argparse

HELP = "upload hub folders of either layout to the Hugging Face Hub (only changed files); --dry-run lists them"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "folders",
        nargs="+",
        metavar="DIR",
        help="hub folder (flat OUT/hub/<name> or per-model OUT/hub/QuantaMaths_<name>), or a folder of them",
    )
    p.add_argument("--repo", help="Hub repository OWNER/NAME (one DIR: where it goes; several: the flat ones' repo)")
    p.add_argument("--owner", help="owner of the per-model repositories OWNER/QuantaMaths_<name> (default: --repo's)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be uploaded and what is unchanged (without a network: every file, not compared)",
    )
    p.add_argument("--hub", help="a local folder standing in for the Hub (default: the Hugging Face Hub)")
    p.add_argument(
        "--record", help="the publish manifest to write (default: publish_manifest.json beside the first DIR)"
    )


def _folders(dirs: list[str]) -> list:
    """The hub folders the DIRs name: each DIR holding a model's files, else its subfolders that do."""
    from pathlib import Path

    from analysis.zoo import models_in
    from arith.errors import InputError

    out = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise InputError(f"{d}: not a folder")
        if models_in(d):
            out.append(d)
            continue
        subs = [s for s in sorted(d.iterdir()) if s.is_dir() and not s.name.startswith(".") and models_in(s)]
        if not subs:
            raise InputError(f"{d}: neither a hub folder nor a folder of hub folders (no model's files in it)")
        out += subs
    return out


def _repo(args: argparse.Namespace, folder, several: bool) -> str:
    from arith.errors import InputError
    from jobs.stages.hub import check_repo, folder_model, per_model_repo

    model, layout = folder_model(folder)
    if args.repo and not (several and layout == "per-model"):
        return args.repo
    if layout == "flat":
        raise InputError(f"{folder}: a flat hub folder needs --repo OWNER/NAME")
    owner = args.owner or (args.repo.split("/")[0] if args.repo else None)
    if owner is None:
        raise InputError(f"{folder}: a per-model hub folder needs --repo, or --owner for OWNER/QuantaMaths_<name>")
    return check_repo(per_model_repo(model, owner))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from arith.errors import InputError
    from jobs.stages.hub import PUBLISH_MANIFEST, check_repo, hub_for, publish_folder, write_publish_manifest

    if args.repo:
        check_repo(args.repo)
    if args.owner:
        check_repo(f"{args.owner}/x")
    folders = _folders(args.folders)
    hub = hub_for(args.hub)
    several = len(folders) > 1
    records = []
    for folder in folders:
        try:
            repo = _repo(args, folder, several)
        except InputError as exc:
            from jobs.stages.hub import PublishRecord

            records.append(PublishRecord(str(folder), args.repo or "", args.dry_run, error=str(exc)))
            continue
        record = publish_folder(hub, repo, folder, dry_run=args.dry_run)
        records.append(record)
        if several:
            print(f"== {folder} -> {repo} ({record.layout or 'unknown layout'})")
        if record.error:
            continue
        verb = "would upload" if args.dry_run else "upload"
        for name in record.changed:
            print(f"{verb}: {name}")
        for name in record.unchanged:
            print(f"unchanged: {name}")
        done = "would be uploaded" if args.dry_run else "uploaded"
        if record.not_compared:
            listed = f"{len(record.changed)} file(s) {done}, every file of the manifest"
            print(f"{repo}: {listed} (not compared: {record.not_compared})")
        else:
            print(f"{repo}: {len(record.changed)} file(s) {done}, {len(record.unchanged)} unchanged")
    path = Path(args.record) if args.record else Path(args.folders[0]).absolute().parent / PUBLISH_MANIFEST
    write_publish_manifest(path, records)
    failed = [r for r in records if r.error]
    if failed:
        more = f" (and {len(failed) - 1} more folder(s); see {path})" if len(failed) > 1 else ""
        raise InputError(f"{failed[0].error}{more}")
    return 0
