#!/usr/bin/env python
"""Download and unpack COCO 2017 detection data into <root> (default data/coco).

    python scripts/download_coco.py --root data/coco                 # train + val + annotations (~19 GB)
    python scripts/download_coco.py --parts val annotations           # enough to evaluate (~1 GB)
    python scripts/download_coco.py --dry-run                         # say what would be done

Each zip is downloaded to <name>.part, resuming an interrupted download with an HTTP Range
request; it is kept only when its size matches the server's and its MD5 the published one, then
unpacked into <root> (giving <root>/train2017/, <root>/val2017/, <root>/annotations/). A finished
step is not repeated: re-running the script after an interruption continues where it stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

BASE_URL = "http://images.cocodataset.org"
# name -> (url path, md5, approximate size for messages, a path inside root that marks it unpacked)
PARTS = {
    "train": ("zips/train2017.zip", "cced6f7f71b7629ddf16f17bbcfab6b2", "18 GB", "train2017"),
    "val": ("zips/val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80", "780 MB", "val2017"),
    "annotations": ("annotations/annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c", "241 MB",
                    "annotations/instances_val2017.json"),
}
CHUNK = 1 << 20


def md5sum(path: Path, progress: bool = False) -> str:
    """MD5 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                     desc=f"md5 {path.name}", disable=not progress) as bar:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def download(url: str, dest: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download url to dest, resuming from dest + ".part" if an earlier attempt left one.

    The server's total size (Content-Range or Content-Length) is checked at the end; a server that
    ignores the Range header (answers 200) makes the download start over instead of appending.
    """
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the .part is already complete
            part.rename(dest)
            return dest
        raise
    with response:
        if have and response.status == 206:
            total = int(response.headers["Content-Range"].rsplit("/", 1)[1])
            mode = "ab"
        else:
            have, mode = 0, "wb"
            total = int(response.headers.get("Content-Length", 0)) or None
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                         desc=dest.name, disable=not progress) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise OSError(f"{part}: got {size} bytes, the server announced {total}; run the script again to resume")
    part.rename(dest)
    return dest


def verify(path: Path, md5: str | None, progress: bool = True) -> None:
    """Raise ValueError (and delete the file, which cannot be resumed into shape) on an MD5 mismatch."""
    if md5 is None:
        return
    actual = md5sum(path, progress)
    if actual != md5:
        path.unlink()
        raise ValueError(f"{path.name}: MD5 {actual} does not match the published {md5}; "
                         "the file was deleted, run the script again to download it afresh")


def extract(zip_path: Path, root: Path, progress: bool = True) -> None:
    """Unpack into root: into a temporary folder first, then move the top-level entries into place."""
    tmp = root / f".extract-{zip_path.stem}"
    with zipfile.ZipFile(zip_path) as archive:
        members = archive.infolist()
        for member in tqdm(members, desc=f"unzip {zip_path.name}", unit="file", disable=not progress):
            archive.extract(member, tmp)
    for entry in sorted(tmp.iterdir()):
        target = root / entry.name
        if target.is_dir() and entry.is_dir():  # e.g. annotations/ from a second zip: merge files
            for item in entry.iterdir():
                item.replace(target / item.name)
            entry.rmdir()
        else:
            entry.replace(target)
    tmp.rmdir()


def plan(root: Path, parts: list[str]) -> list[tuple[str, str]]:
    """-> [(part, action)] with action one of "done", "extract", "verify+extract", "download"."""
    steps = []
    for name in parts:
        url_path, _, _, marker = PARTS[name]
        zip_path = root / Path(url_path).name
        if (root / marker).exists():
            steps.append((name, "done"))
        elif zip_path.exists():
            steps.append((name, "verify+extract"))
        else:
            steps.append((name, "download"))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/coco"), help="where to put the data (default data/coco)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="what to fetch (default: all)")
    parser.add_argument("--base-url", default=BASE_URL, help="mirror to download from")
    parser.add_argument("--delete-zips", action="store_true", help="delete each zip after unpacking it")
    parser.add_argument("--no-md5", action="store_true", help="skip the MD5 check (it reads 18 GB for train)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    root = args.root
    for name, action in plan(root, args.parts):
        url_path, md5, approx, marker = PARTS[name]
        url, zip_path = f"{args.base_url.rstrip('/')}/{url_path}", root / Path(url_path).name
        part = zip_path.with_name(zip_path.name + ".part")
        if action == "done":
            print(f"[{name}] {root / marker} exists: nothing to do")
            continue
        if args.dry_run:
            resume = f" (resuming at {part.stat().st_size} bytes)" if part.exists() and action == "download" else ""
            fetch = f"download {url} (~{approx}) to {zip_path}{resume}, " if action == "download" else ""
            print(f"[{name}] would {fetch}check MD5 {md5}, unpack into {root}")
            continue
        root.mkdir(parents=True, exist_ok=True)
        if action == "download":
            download(url, zip_path)
        if not args.no_md5:
            verify(zip_path, md5)
        extract(zip_path, root)
        if args.delete_zips:
            zip_path.unlink()
        print(f"[{name}] ready: {root / marker}")
    if not args.dry_run:
        print(f"COCO 2017 is in {root} (tood_lib finds it there when it is data/coco, or set COCO_ROOT={root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
